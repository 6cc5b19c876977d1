"""Decoding: mono, resampling, clipping, and clear refusals for unusable files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone

from genre_ray.data.audio import AudioError, clip_bounds, cut_clips, decode, downmix, n_clips, resample


def test_stereo_is_mixed_to_mono_and_resampled(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "a.wav", seconds=2.0, sr=44100, channels=2)
    wave = decode(str(path), 22050)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 2 * 22050) <= 2


@pytest.mark.parametrize("fmt, ext", [("FLAC", "flac"), ("OGG", "ogg"), ("AU", "au")])
def test_other_formats_decode(tmp_path: Path, fmt: str, ext: str) -> None:
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    path = write_tone(tmp_path / f"a.{ext}", seconds=1.0, sr=16000, subtype=subtype, fmt=fmt)
    assert len(decode(str(path), 16000)) == pytest.approx(16000, abs=10)


def test_truncated_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "t.wav", seconds=2.0)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioError) as info:
        decode(str(path), 22050)
    assert str(path) in str(info.value)


def test_not_audio_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.wav"
    path.write_text("this is not audio")
    with pytest.raises(AudioError) as info:
        decode(str(path), 22050)
    assert info.value.reason == "undecodable"


def test_silence_and_short_files_are_refused(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(22050, np.float32), 22050)
    with pytest.raises(AudioError, match="silent"):
        decode(str(silent), 22050)
    short = write_tone(tmp_path / "short.wav", seconds=0.2)
    with pytest.raises(AudioError, match="long"):
        decode(str(short), 22050)


def test_a_few_nan_samples_are_zeroed_but_mostly_nan_is_refused(tmp_path: Path) -> None:
    wave = (0.3 * np.sin(np.arange(22050) / 5)).astype(np.float32)
    wave[100:110] = np.nan
    few = tmp_path / "few.wav"
    sf.write(few, wave, 22050, subtype="FLOAT")
    out = decode(str(few), 22050)
    assert np.isfinite(out).all() and out[105] == 0.0
    wave[: 22050 // 2] = np.nan
    many = tmp_path / "many.wav"
    sf.write(many, wave, 22050, subtype="FLOAT")
    with pytest.raises(AudioError) as info:
        decode(str(many), 22050)
    assert info.value.reason == "nan"


def test_clips_cover_the_song_with_overlap() -> None:
    assert clip_bounds(100, 40, 0.5) == [0, 20, 40, 60]
    assert clip_bounds(30, 40, 0.5) == [0]
    clips = cut_clips(np.arange(100, dtype=np.float32), 40, 0.5)
    assert clips.shape == (4, 40) and clips[1, 0] == 20
    assert cut_clips(np.ones(10, np.float32), 40, 0.0).shape == (1, 40)
    assert n_clips(10.0, 22050, 3.0, 0.5) == 5


def test_long_file_decodes_only_the_clips_used_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    from genre_ray.data.audio import decode_clips

    sr, minutes = 22050, 20
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        block = (0.3 * np.sin(np.arange(sr * 60) / 7)).astype(np.float32)
        for _ in range(minutes):
            f.write(block)
    tracemalloc.start()
    clips = decode_clips(str(path), sr, 3 * sr, 0.5, max_clips=10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert clips.shape == (10, 3 * sr) and np.abs(clips).max() > 0.1
    whole = sr * 60 * minutes * 4  # the float32 decode of the whole file: 106 MB
    assert peak < whole / 8


def test_decode_clips_matches_whole_decode_when_all_clips_are_used(tmp_path: Path) -> None:
    from genre_ray.data.audio import decode_clips

    path = write_tone(tmp_path / "a.wav", seconds=4.0, sr=44100, channels=2)
    every = decode_clips(str(path), 22050, 22050, 0.5)
    assert np.allclose(every, cut_clips(decode(str(path), 22050), 22050, 0.5))
    spread = decode_clips(str(path), 22050, 22050, 0.5, max_clips=3)
    assert spread.shape == (3, 22050)
    # equal but for the resampler's edge at the end of each separately read stretch
    assert np.allclose(spread[0, :20000], every[0, :20000], atol=5e-3)
    assert np.allclose(spread[-1, :20000], every[-1, :20000], atol=5e-3)


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 32000, 44100, 48000, 96000])
def test_resample_gives_librosa_s_soxr_hq_samples(sr: int) -> None:
    import librosa

    rng = np.random.default_rng(sr)
    for n in (sr // 2 + 1, 3 * sr + 7):
        x = (0.3 * rng.standard_normal(n)).astype(np.float32)
        ours = resample(x, sr, 22050)
        theirs = librosa.resample(x, orig_sr=sr, target_sr=22050, res_type="soxr_hq")
        assert ours.dtype == np.float32 and ours.flags.c_contiguous
        assert ours.shape == theirs.shape and np.array_equal(ours, theirs)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 7, 8, 12])
def test_downmix_is_the_channel_mean_sample_for_sample(channels: int) -> None:
    rng = np.random.default_rng(channels)
    frames = rng.standard_normal((5003, channels)).astype(np.float32)
    for data, axis in ((frames, 1), (np.ascontiguousarray(frames.T), 0)):
        mixed = downmix(data, axis=axis)
        assert mixed.dtype == np.float32 and mixed.shape == (5003,)
        assert np.array_equal(mixed, data.mean(axis=axis))


def test_decoding_does_not_import_librosa_s_audio_module(tmp_path: Path) -> None:
    """That import (with scipy.signal) costs seconds in each fresh process: each tag actor, each predict."""
    path = write_tone(tmp_path / "a.wav", seconds=2.0, sr=44100, channels=2)
    code = ("import sys; from genre_ray.data.audio import decode; "
            f"w = decode({str(path)!r}, 22050); assert len(w) == 44100, len(w); "
            "print(sorted(m for m in sys.modules if m in ('librosa.core.audio', 'scipy.signal')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
