"""Features from one shared STFT agree with librosa's reference implementations."""

from __future__ import annotations

import librosa
import numpy as np

from genre_ray.features import FeatureSettings, compute_features


def _clips(n: int = 3, seconds: float = 1.0, sr: int = 22050) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([np.sin(2 * np.pi * (220 * (i + 1)) * t) + 0.05 * rng.standard_normal(len(t))
                     for i in range(n)]).astype(np.float32)


def test_shapes_of_every_kind() -> None:
    s = FeatureSettings(kinds=("logmel", "mfcc", "chroma"), clip_seconds=1.0, n_mels=40)
    out = compute_features(_clips(), s)
    assert out["logmel"].shape == (3, 40, s.frames)
    assert out["mfcc"].shape == (3, 20, s.frames)
    assert out["chroma"].shape == (3, 12, s.frames)
    assert all(v.dtype == np.float32 for v in out.values())


def test_logmel_matches_librosa() -> None:
    s = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, n_mels=64)
    clips = _clips()
    ours = compute_features(clips, s)["logmel"][0]
    mel = librosa.feature.melspectrogram(y=clips[0], sr=22050, n_fft=1024, hop_length=512, n_mels=64,
                                         power=2.0)
    ref = librosa.power_to_db(mel, ref=1.0, top_db=None)
    ref = np.maximum(ref, ref.max() - 80.0)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 0.1


def test_chroma_peaks_at_the_played_pitch_class() -> None:
    s = FeatureSettings(kinds=("chroma",), clip_seconds=1.0, n_fft=4096, hop_length=1024)
    chroma = compute_features(_clips(n=1), s)["chroma"][0]  # 220 Hz is an A
    assert int(np.argmax(chroma.mean(axis=1))) == 9


def test_chroma_filterbank_is_librosas() -> None:
    from genre_ray.features.spectral import chroma_filterbank

    for sr, n_fft, n_chroma in ((22050, 1024, 12), (22050, 2048, 12), (16000, 512, 24), (44100, 4096, 36),
                                (8000, 256, 12), (22050, 1023, 12)):
        ours = chroma_filterbank(sr, n_fft, n_chroma)
        theirs = librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma, dtype=np.float64)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12,
                                   err_msg=f"sr={sr} n_fft={n_fft} n_chroma={n_chroma}")


def test_same_input_same_output_and_batches_are_independent() -> None:
    s = FeatureSettings(kinds=("logmel",), clip_seconds=1.0)
    clips = _clips()
    both = compute_features(clips, s)["logmel"]
    one = compute_features(clips[1:2], s)["logmel"]
    assert np.allclose(both[1], one[0], atol=1e-4)
