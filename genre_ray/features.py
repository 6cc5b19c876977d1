"""Waveform clips -> features, batched, from one shared STFT. Pure torch/torchaudio/librosa.

All features of a batch of clips come from a single ``torch.stft`` call: log-mel (torchaudio's
mel filterbank and dB scaling), MFCC (torchaudio's DCT of the log-mel) and chroma (librosa's
chroma filterbank on the same power spectrogram). This is the floor that the featurization
benchmark measures, and the Ray Data pipeline runs exactly this function per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
import warnings
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
import torch
import torchaudio.functional as AF

__all__ = ["FEATURE_KINDS", "FeatureSettings", "compute_features"]

FEATURE_KINDS = ("logmel", "mfcc", "chroma")


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that decides feature values. Its ``as_dict`` is part of the cache key."""

    kinds: tuple[str, ...] = ("logmel",)
    sample_rate: int = 22050
    clip_seconds: float = 3.0
    clip_overlap: float = 0.5
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float | None = None
    n_mfcc: int = 20
    n_chroma: int = 12
    top_db: float = 80.0
    max_clips_per_song: int | None = None  # longer songs: this many clips spread evenly over the song

    @classmethod
    def from_config(cls, features: dict[str, Any]) -> FeatureSettings:
        """Build from the validated ``features:`` section of a search space."""
        skip = {"kind", "cache_dir", "batch_files", "image_size"}
        return cls(kinds=(features["kind"],), **{k: v for k, v in features.items() if k not in skip})

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        return self.clip_samples // self.hop_length + 1

    def shape(self, kind: str) -> tuple[int, int]:
        """(bins, frames) of one clip's feature ``kind``."""
        bins = {"logmel": self.n_mels, "mfcc": self.n_mfcc, "chroma": self.n_chroma}[kind]
        return bins, self.frames

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@lru_cache(maxsize=8)
def _filters(s: FeatureSettings) -> dict[str, torch.Tensor]:
    n_freqs = s.n_fft // 2 + 1
    mel = AF.melscale_fbanks(n_freqs, s.f_min, s.f_max or s.sample_rate / 2, s.n_mels,
                             s.sample_rate, norm="slaney", mel_scale="slaney")
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the mm used here is stable
        warnings.simplefilter("ignore", UserWarning)
        # About 1.5 % of a mel filterbank is non-zero: a sparse product is ~8x cheaper than dense.
        out = {"window": torch.hann_window(s.n_fft), "mel": mel.T.contiguous().to_sparse_csr()}
    if "mfcc" in s.kinds:
        out["dct"] = AF.create_dct(s.n_mfcc, s.n_mels, norm="ortho").T.contiguous()
    if "chroma" in s.kinds:
        chroma = librosa.filters.chroma(sr=s.sample_rate, n_fft=s.n_fft, n_chroma=s.n_chroma)
        out["chroma"] = torch.from_numpy(chroma.astype(np.float32))
    return out


def _mel(fb: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """(n_mels, freqs) sparse filterbank x (n, freqs, frames) power -> (n, n_mels, frames)."""
    n, freqs, frames = power.shape
    flat = power.permute(1, 0, 2).reshape(freqs, n * frames)
    return torch.sparse.mm(fb, flat).reshape(-1, n, frames).permute(1, 0, 2).contiguous()


def _db(x: torch.Tensor, top_db: float) -> torch.Tensor:
    """Power -> dB, floored ``top_db`` below each clip's peak (as librosa.power_to_db)."""
    db = 10.0 * torch.log10(torch.clamp(x, min=1e-10))
    peak = db.amax(dim=(-2, -1), keepdim=True)
    return torch.maximum(db, peak - top_db)


@torch.inference_mode()
def compute_features(clips: np.ndarray | torch.Tensor, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """Features of a batch of equal-length clips.

    Args:
        clips: ``(n_clips, clip_samples)`` float32 waveforms at ``settings.sample_rate``.
        settings: which features and their parameters.

    Returns:
        ``kind -> (n_clips, bins, frames)`` float32 arrays for every kind in ``settings.kinds``.
    """
    x = torch.as_tensor(clips, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"clips must be (n_clips, samples), got {tuple(x.shape)}")
    f = _filters(settings)
    # Zero padding at the edges, as librosa does, so the values match librosa's.
    spec = torch.stft(x, settings.n_fft, settings.hop_length, window=f["window"], center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (n, freqs, frames)
    out: dict[str, np.ndarray] = {}
    logmel = None
    if "logmel" in settings.kinds or "mfcc" in settings.kinds:
        logmel = _db(_mel(f["mel"], power), settings.top_db)
    if "logmel" in settings.kinds:
        assert logmel is not None
        out["logmel"] = logmel.numpy()
    if "mfcc" in settings.kinds:
        assert logmel is not None
        out["mfcc"] = torch.matmul(f["dct"], logmel).numpy()
    if "chroma" in settings.kinds:
        chroma = torch.matmul(f["chroma"], power)
        out["chroma"] = (chroma / torch.clamp(chroma.amax(dim=1, keepdim=True), min=1e-10)).numpy()
    return out
