"""Every feature kind: shapes, laziness, and agreement with librosa / numpy references."""

from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA

from genre_ray import features
from genre_ray.features import GTZAN57_COLUMNS, FeatureSettings, compute_features
from genre_ray.features.spectral import FEATURE_KINDS as ALL_KINDS
from genre_ray.features.spectral import PRETRAINED_KINDS

# The kinds computed here from short clips; the pretrained networks' kinds (3-s patches) have
# their own tests (test_pretrained.py).
FEATURE_KINDS = tuple(k for k in ALL_KINDS if k not in (*PRETRAINED_KINDS, "musicnn_mel"))

SR = 22050
GTZAN_CSV = SHARED_DATA / "gtzan_features_30_sec_dev.csv"
GTZAN_DIR = SHARED_DATA / "gtzan_dev"


def _tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _music(n: int = 3, seconds: float = 1.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Tones, noise and clicks at 120 BPM, each clip at another loudness."""
    rng = np.random.default_rng(seed)
    size = int(round(seconds * sr))
    out = []
    for i in range(n):
        y = _tone(220 * (i + 1), seconds, sr) + _tone(330 * (i + 1), seconds, sr, 0.2)
        y += 0.05 * rng.standard_normal(size)
        for start in range(0, size, sr // 2):  # a 20-ms noise burst every 0.5 s
            y[start:start + sr // 50] += rng.standard_normal(len(y[start:start + sr // 50]))
        out.append(y * 10.0 ** (-i))
    return np.stack(out).astype(np.float32)


def _db_ref(power: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    ref = librosa.power_to_db(power, ref=1.0, top_db=None)
    return np.maximum(ref, ref.max() - top_db)


ODD = FeatureSettings(kinds=FEATURE_KINDS, sample_rate=16000, clip_seconds=1.3, n_fft=512, hop_length=160,
                      n_mels=40, n_mfcc=13, mfcc_deltas=2, n_contrast_bands=5, waveform_rate=11025)


@pytest.mark.parametrize("settings", [FeatureSettings(kinds=FEATURE_KINDS, clip_seconds=1.0), ODD])
def test_every_kind_has_the_shape_that_shape_gives(settings: FeatureSettings) -> None:
    clips = _music(2, settings.clip_seconds, settings.sample_rate)
    out = compute_features(clips, settings)
    assert set(out) == set(FEATURE_KINDS)
    for kind, arr in out.items():
        assert arr.shape == (2, *settings.shape(kind)), kind
        assert arr.dtype == np.float32 and np.isfinite(arr).all(), kind
        assert sum(settings.groups(kind)) == settings.shape(kind)[0], kind
    s = settings
    assert s.shape("stft") == (s.n_fft // 2 + 1, s.frames)
    assert s.shape("mfcc") == (s.n_mfcc * (1 + s.mfcc_deltas), s.frames)
    assert s.shape("contrast") == (s.n_contrast_bands + 1, s.frames)
    assert s.groups("stacked") == (s.n_mels, s.n_mfcc * (1 + s.mfcc_deltas), s.n_chroma)
    assert s.shape("stats") == (s.n_mfcc + s.n_mfcc * (s.n_mfcc + 1) // 2,)
    assert s.shape("gtzan57") == (57,) and s.shape("waveform")[0] == 1


def test_only_the_requested_kinds_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    clips = _music(2)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("computed although not requested")

    monkeypatch.setattr(features, "_contrast", boom)
    monkeypatch.setattr(features, "_gtzan57", boom)
    monkeypatch.setattr(features, "_waveform", boom)
    monkeypatch.setattr(features, "_stats", boom)
    for kinds in [("logmel",), ("stft", "chroma"), ("stacked",), ("mfcc",)]:
        out = compute_features(clips, FeatureSettings(kinds=kinds, clip_seconds=1.0))
        assert tuple(out) == kinds
    monkeypatch.undo()
    monkeypatch.setattr(torch, "stft", boom)  # a waveform alone needs no spectrogram
    out = compute_features(clips, FeatureSettings(kinds=("waveform",), clip_seconds=1.0))
    assert tuple(out) == ("waveform",)


def test_a_kind_is_the_same_alone_and_with_others() -> None:
    clips = _music(2)
    both = compute_features(clips, FeatureSettings(kinds=FEATURE_KINDS, clip_seconds=1.0, mfcc_deltas=1))
    for kind in FEATURE_KINDS:
        alone = compute_features(clips, FeatureSettings(kinds=(kind,), clip_seconds=1.0, mfcc_deltas=1))
        assert np.array_equal(alone[kind], both[kind]), kind


def test_stft_matches_librosa() -> None:
    s = FeatureSettings(kinds=("stft",), clip_seconds=1.0)
    clips = _music()
    ours = compute_features(clips, s)["stft"]
    for y, got in zip(clips, ours, strict=True):
        power = np.abs(librosa.stft(y, n_fft=s.n_fft, hop_length=s.hop_length, center=True,
                                    pad_mode="constant")) ** 2
        ref = _db_ref(power)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 0.01


def test_mfcc_deltas_are_librosa_deltas_of_width_5() -> None:
    clips = _music(2)
    base = compute_features(clips, FeatureSettings(kinds=("mfcc",), clip_seconds=1.0))["mfcc"]
    full = compute_features(clips, FeatureSettings(kinds=("mfcc",), clip_seconds=1.0, mfcc_deltas=2))["mfcc"]
    n = base.shape[1]
    delta = librosa.feature.delta(base, width=5, mode="nearest", axis=-1)
    delta2 = librosa.feature.delta(delta, width=5, mode="nearest", axis=-1)
    assert np.array_equal(full[:, :n], base)
    assert np.allclose(full[:, n:2 * n], delta, atol=1e-3)
    assert np.allclose(full[:, 2 * n:], delta2, atol=1e-3)
    assert np.abs(delta).max() > 1.0  # the comparison is not of zeros


def test_contrast_matches_librosa_per_clip_whatever_the_batch() -> None:
    s = FeatureSettings(kinds=("contrast",), clip_seconds=1.0, n_contrast_bands=5)
    clips = _music()  # clips 40 dB apart: librosa's batch dB floor would tie them together
    ours = compute_features(clips, s)["contrast"]
    for i, y in enumerate(clips):
        ref = librosa.feature.spectral_contrast(y=y, sr=SR, n_fft=s.n_fft, hop_length=s.hop_length, n_bands=5)
        assert ours[i].shape == ref.shape
        assert np.abs(ours[i] - ref).max() < 0.01, i
        assert np.array_equal(compute_features(clips[i:i + 1], s)["contrast"][0], ours[i])


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
@pytest.mark.parametrize("bands", [4, 5, 6, 7, 8])
def test_contrast_refuses_bands_above_nyquist_exactly_when_librosa_does(sr: int, bands: int) -> None:
    try:
        librosa.feature.spectral_contrast(S=np.ones((1025, 3)), sr=sr, n_fft=2048, n_bands=bands)
        librosa_ok = True
    except librosa.ParameterError:
        librosa_ok = False
    if librosa_ok:
        FeatureSettings(kinds=("contrast",), sample_rate=sr, n_contrast_bands=bands)
    else:
        with pytest.raises(ValueError, match="n_contrast_bands"):
            FeatureSettings(kinds=("contrast",), sample_rate=sr, n_contrast_bands=bands)
    FeatureSettings(kinds=("logmel",), sample_rate=sr, n_contrast_bands=bands)  # only checked when used


def test_stacked_is_the_parts_one_above_the_other() -> None:
    s = FeatureSettings(kinds=("stacked", "logmel", "mfcc", "chroma"), clip_seconds=1.0, mfcc_deltas=1)
    out = compute_features(_music(), s)
    assert np.array_equal(out["stacked"], np.concatenate([out["logmel"], out["mfcc"], out["chroma"]], axis=1))
    assert s.groups("stacked") == (64, 40, 12)
    parts = np.split(out["stacked"], np.cumsum(s.groups("stacked"))[:-1], axis=1)
    assert [p.shape[1] for p in parts] == [64, 40, 12]


def test_stats_are_mean_and_covariance_of_the_mfcc_frames() -> None:
    s = FeatureSettings(kinds=("stats", "mfcc"), clip_seconds=1.0, n_mfcc=13, mfcc_deltas=2)
    out = compute_features(_music(), s)
    rows, cols = np.triu_indices(13)
    for mfcc, stats in zip(out["mfcc"], out["stats"], strict=True):
        frames = mfcc[:13].astype(np.float64)  # no deltas in the statistics
        ref = np.concatenate([frames.mean(axis=1), np.cov(frames)[rows, cols]])
        assert stats.shape == ref.shape == (13 + 91,)
        assert np.allclose(stats, ref, rtol=1e-4, atol=1e-3)


def _librosa_gtzan57(y: np.ndarray, sr: int) -> np.ndarray:
    """The table's recipe, straight from librosa on the waveform."""
    harmonic, percussive = librosa.effects.hpss(y)
    series = [librosa.feature.chroma_stft(y=y, sr=sr), librosa.feature.rms(y=y),
              librosa.feature.spectral_centroid(y=y, sr=sr), librosa.feature.spectral_bandwidth(y=y, sr=sr),
              librosa.feature.spectral_rolloff(y=y, sr=sr), librosa.feature.zero_crossing_rate(y),
              harmonic, percussive]
    tempo = float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=sr)[0])[0])
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    return np.array([v for a in series for v in (np.mean(a), np.var(a))] + [tempo]
                    + [v for row in mfcc for v in (np.mean(row), np.var(row))])


def test_gtzan57_is_the_librosa_recipe_and_shares_a_2048_point_stft() -> None:
    clips = _music(2, seconds=3.0)
    ours = compute_features(clips, FeatureSettings(kinds=("gtzan57",)))["gtzan57"]
    shared = compute_features(clips, FeatureSettings(kinds=("gtzan57", "logmel"), n_fft=2048))["gtzan57"]
    assert np.allclose(shared, ours, rtol=1e-5, atol=1e-7)
    near_zero = [GTZAN57_COLUMNS.index(c) for c in ("harmony_mean", "perceptr_mean")]
    rest = [i for i in range(57) if i not in near_zero]
    for got, y in zip(ours, clips, strict=True):
        ref = _librosa_gtzan57(y, SR)
        assert np.allclose(got[rest], ref[rest], rtol=2e-3, atol=1e-6)
        for i in near_zero:  # waveform means: compare with the waveform's spread (the next column)
            assert abs(got[i] - ref[i]) < 1e-3 * np.sqrt(ref[i + 1])


def test_gtzan57_of_a_pure_tone() -> None:
    y = _tone(440.0, 3.0, amp=0.5)
    values = compute_features(y[None], FeatureSettings(kinds=("gtzan57",)))["gtzan57"][0]
    got = dict(zip(GTZAN57_COLUMNS, values, strict=True))
    assert abs(got["spectral_centroid_mean"] - 440) < 15
    assert abs(got["rolloff_mean"] - 440) < 40
    assert abs(got["zero_crossing_rate_mean"] - 2 * 440 / SR) < 0.002
    assert abs(got["rms_mean"] - 0.5 / np.sqrt(2)) < 0.01
    assert got["harmony_var"] > 10 * got["perceptr_var"]  # a steady tone is harmonic
    s = FeatureSettings(kinds=("chroma",), n_fft=4096, hop_length=1024)
    chroma = compute_features(y[None], s)["chroma"]
    assert int(np.argmax(chroma[0].mean(axis=1))) == 9  # A


def test_gtzan57_column_names() -> None:
    stems = ["chroma_stft", "rms", "spectral_centroid", "spectral_bandwidth", "rolloff", "zero_crossing_rate",
             "harmony", "perceptr"]
    expected = [f"{s}_{t}" for s in stems for t in ("mean", "var")] + ["tempo"]
    expected += [f"mfcc{i}_{t}" for i in range(1, 21) for t in ("mean", "var")]
    assert GTZAN57_COLUMNS == tuple(expected) and len(GTZAN57_COLUMNS) == 57
    if GTZAN_CSV.exists():
        header = pd.read_csv(GTZAN_CSV, nrows=0).columns
        assert tuple(c for c in header if c not in ("filename", "length", "label")) == GTZAN57_COLUMNS


@pytest.mark.parametrize(("sr", "rate", "seconds"), [
    (22050, 8000, 3.0), (22050, 8000, 1.0001), (16000, 8000, 0.77), (44100, 11025, 1.234567),
    (22050, 22050, 1.0)])
def test_waveform_length_is_what_shape_gives(sr: int, rate: int, seconds: float) -> None:
    s = FeatureSettings(kinds=("waveform",), sample_rate=sr, waveform_rate=rate, clip_seconds=seconds)
    clips = np.random.default_rng(0).standard_normal((2, s.clip_samples)).astype(np.float32)
    out = compute_features(clips, s)["waveform"]
    assert out.shape == (2, *s.shape("waveform"))
    if rate == sr:
        assert np.array_equal(out[:, 0], clips)
    else:  # torchaudio's own length, not a cut or padded one
        assert out.shape[-1] == features.AF.resample(torch.from_numpy(clips), sr, rate).shape[1]


def test_waveform_keeps_frequency_and_amplitude() -> None:
    s = FeatureSettings(kinds=("waveform",), clip_seconds=2.0)
    out = compute_features(_tone(100.0, 2.0, amp=0.3)[None], s)["waveform"][0, 0]
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 8000 / len(out) - 100.0) < 1.0
    assert abs(np.abs(out[100:-100]).max() - 0.3) < 0.01


def test_settings_from_config_and_as_dict() -> None:
    section = {"kind": {"choice": ["logmel", "mfcc"]}, "sample_rate": 16000, "n_mels": 40, "cache_dir": None,
               "batch_files": 8, "image_size": 128, "something_new": 1, "mfcc_deltas": 1}
    s = FeatureSettings.from_config(section, kinds=("logmel", "mfcc"))
    assert s.kinds == ("logmel", "mfcc") and s.sample_rate == 16000 and s.mfcc_deltas == 1
    assert FeatureSettings.from_config({**section, "kind": "stats"}).kinds == ("stats",)
    again = json.loads(json.dumps(s.as_dict()))
    assert FeatureSettings(**again) == s  # a list of kinds (from JSON) is taken as a tuple


def test_bad_input_and_settings_are_refused() -> None:
    s = FeatureSettings(kinds=("logmel",))
    with pytest.raises(ValueError, match="n_clips"):
        compute_features(np.zeros(100, np.float32), s)
    with pytest.raises(ValueError, match="n_clips"):
        compute_features(np.zeros((0, 100), np.float32), s)
    with pytest.raises(ValueError, match="valid kinds"):
        FeatureSettings(kinds=("mel",))
    with pytest.raises(ValueError, match="mfcc_deltas"):
        FeatureSettings(mfcc_deltas=3)


def _dev_songs() -> list[tuple[Path, pd.Series]]:
    table = pd.read_csv(GTZAN_CSV)
    rows = table.set_index("filename").iterrows()
    return [(GTZAN_DIR / name.split(".")[0] / name, row) for name, row in rows
            if (GTZAN_DIR / name.split(".")[0] / name).exists()]


def _agreement(path: Path, row: pd.Series) -> None:
    """Whole-song gtzan57 against the Kaggle table's row (bounds: a few times the worst seen on the
    30 dev songs, librosa 0.11)."""
    from genre_ray.data.audio import decode

    y = decode(str(path), SR)
    assert len(y) == row["length"]
    s = FeatureSettings(kinds=("gtzan57",), clip_seconds=len(y) / SR)
    got = dict(zip(GTZAN57_COLUMNS, compute_features(y[None], s)["gtzan57"][0].astype(float), strict=True))
    for col in GTZAN57_COLUMNS:
        ref, err = row[col], abs(got[col] - row[col])
        if col in ("harmony_mean", "perceptr_mean") or (col.startswith("mfcc") and col.endswith("_mean")):
            bound = 0.01 * np.sqrt(row[col.replace("_mean", "_var")])  # means near 0: 1 % of the spread
        elif col.endswith("_var"):
            bound = 0.05 * abs(ref)
        else:  # the other means and the tempo
            bound = 0.01 * abs(ref)
        assert err <= bound, (path.name, col, got[col], ref)


@pytest.mark.skipif(not (GTZAN_CSV.exists() and GTZAN_DIR.exists()), reason="../shared/data absent")
def test_gtzan57_agrees_with_the_kaggle_table_on_real_songs() -> None:
    songs = {p.name: (p, r) for p, r in _dev_songs()}
    picked = [n for n in ("blues.00001.wav", "classical.00001.wav", "metal.00001.wav") if n in songs]
    assert picked, "no dev song matches the table"
    for name in picked:
        _agreement(*songs[name])



@pytest.mark.parametrize("frames", [3, 14, 130])
def test_hpss_median_is_scipys_reflecting_median(frames: int) -> None:
    import scipy.ndimage

    x = np.abs(np.random.default_rng(frames).standard_normal((70, frames))).astype(np.float32)
    assert np.array_equal(features._median31(x), scipy.ndimage.median_filter(x, size=(1, 31), mode="reflect"))
