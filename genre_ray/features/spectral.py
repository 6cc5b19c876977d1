"""Waveform clips -> features, batched, from one shared STFT. Pure torch/torchaudio/librosa.

Every spectral feature of a batch of clips comes from a single ``torch.stft`` call: log-mel
(torchaudio's mel filterbank and dB scaling), the linear power spectrogram in dB, MFCC
(torchaudio's DCT of the log-mel, optionally with deltas), chroma (librosa's chroma filterbank on
the same power spectrogram) and spectral contrast. ``stacked`` and ``stats`` are built from those.
``gtzan57`` is the Kaggle GTZAN feature table's 57 song statistics (librosa's defaults: its own
2048-point STFT, shared only when the settings use the same one). ``waveform`` is the resampled
clip. Only the kinds asked for, and what they are made from, are computed. This is the floor that
the featurization benchmark measures, and the Ray Data pipeline runs exactly this function per
batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
import torch
import torchaudio.functional as AF

from genre_ray.features import pretrained
from genre_ray.features.kinds import CONTRAST_FMIN as _CONTRAST_FMIN
from genre_ray.features.kinds import FEATURE_KINDS, PRETRAINED_KINDS, contrast_error

__all__ = ["FEATURE_KINDS", "GTZAN57_COLUMNS", "FeatureSettings", "compute_features"]

#: Kinds computed from the clip resampled to the networks' 16 kHz, in 3-s patches.
_AT_16K = (*PRETRAINED_KINDS, "musicnn_mel")

_GTZAN_SERIES = ("chroma_stft", "rms", "spectral_centroid", "spectral_bandwidth", "rolloff",
                 "zero_crossing_rate", "harmony", "perceptr")
# The feature columns of the Kaggle GTZAN ``features_30_sec.csv`` / ``features_3_sec.csv``, in order.
GTZAN57_COLUMNS: tuple[str, ...] = (
    *(f"{name}_{stat}" for name in _GTZAN_SERIES for stat in ("mean", "var")),
    "tempo",
    *(f"mfcc{i}_{stat}" for i in range(1, 21) for stat in ("mean", "var")),
)

# What each kind is made from (itself included). "logmel", "stft", "chroma" and "contrast" need
# the shared power spectrogram.
_INGREDIENTS = {
    "logmel": ("logmel",), "stft": ("stft",), "mfcc": ("logmel", "mfcc"), "chroma": ("chroma",),
    "contrast": ("contrast",), "stacked": ("logmel", "mfcc", "chroma", "stacked"),
    "stats": ("logmel", "mfcc", "stats"), "gtzan57": ("gtzan57",), "waveform": ("waveform",),
    **{kind: (kind,) for kind in _AT_16K},
}
_SPECTRAL = frozenset({"logmel", "stft", "chroma", "contrast"})
_GTZAN_N_FFT, _GTZAN_HOP = 2048, 512  # librosa's defaults, which the Kaggle table used


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that decides feature values. Its ``as_dict`` is part of the cache key.

    ``mfcc_deltas`` (0, 1 or 2) appends delta and delta-delta rows to ``mfcc`` (and to the MFCC part
    of ``stacked``); ``n_contrast_bands`` is the number of octave bands of ``contrast``;
    ``waveform_rate`` is the sample rate of ``waveform``. ``embedding_layer`` and
    ``embedding_pool`` choose the layer of a pretrained kind and how a clip's 3-s patches are pooled
    (:mod:`genre_ray.features.pretrained`).
    """

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
    mfcc_deltas: int = 0
    n_contrast_bands: int = 6
    waveform_rate: int = 8000
    embedding_layer: str = "all"
    embedding_pool: str = "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))  # a list (from JSON) would not hash
        unknown = [k for k in self.kinds if k not in FEATURE_KINDS]
        if unknown:
            raise ValueError(f"kinds: unknown {unknown}; valid kinds: {', '.join(FEATURE_KINDS)}")
        if self.mfcc_deltas not in (0, 1, 2):
            raise ValueError(f"mfcc_deltas: must be 0, 1 or 2, got {self.mfcc_deltas}")
        if self.waveform_rate <= 0:
            raise ValueError(f"waveform_rate: must be positive, got {self.waveform_rate}")
        for kind in set(self.kinds) & set(PRETRAINED_KINDS):
            problem = pretrained.layer_error(kind, self.embedding_layer)
            if problem:
                raise ValueError(f"embedding_layer: {problem}, got {self.embedding_layer!r}")
        if self.embedding_pool not in pretrained.POOLS:
            raise ValueError(f"embedding_pool: must be one of {', '.join(pretrained.POOLS)}, got "
                             f"{self.embedding_pool!r}")
        if set(self.kinds) & set(_AT_16K) and (problem := pretrained.clip_error(self.clip_seconds)):
            raise ValueError(f"clip_seconds: {problem} for the pretrained kinds, got {self.clip_seconds}")
        if "contrast" in self.kinds and (problem := contrast_error(self.n_contrast_bands, self.sample_rate)):
            raise ValueError(f"n_contrast_bands: {problem}, got {self.n_contrast_bands}")

    @classmethod
    def from_config(cls, features: dict[str, Any], kinds: tuple[str, ...] | None = None) -> FeatureSettings:
        """Build from the validated ``features:`` section of a search space.

        Args:
            features: the section; keys that are not fields of this class are ignored.
            kinds: the kinds to compute; ``None`` means ``(features["kind"],)``, and when given,
                ``features["kind"]`` (which may be a searched choice) is not read.

        Returns:
            The settings.
        """
        names = {f.name for f in fields(cls)} - {"kinds"}
        chosen = (features["kind"],) if kinds is None else tuple(kinds)
        return cls(kinds=chosen, **{k: v for k, v in features.items() if k in names})

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        return self.clip_samples // self.hop_length + 1

    @property
    def waveform_samples(self) -> int:
        """Length of the resampled clip: ``ceil(clip_samples * waveform_rate / sample_rate)``."""
        return -(-self.clip_samples * self.waveform_rate // self.sample_rate)

    def groups(self, kind: str) -> tuple[int, ...]:
        """Row counts of the parts of ``kind`` along its first axis.

        ``stacked`` gives ``(n_mels, n_mfcc * (1 + mfcc_deltas), n_chroma)``; every other kind is one
        part, ``(shape(kind)[0],)``.
        """
        if kind == "stacked":
            return self.n_mels, self.n_mfcc * (1 + self.mfcc_deltas), self.n_chroma
        return (self.shape(kind)[0],)

    def shape(self, kind: str) -> tuple[int, ...]:
        """Shape of one clip's feature ``kind``: ``(bins, frames)``, ``(values,)`` or ``(1, samples)``."""
        n = self.n_mfcc
        two_d = {"logmel": self.n_mels, "stft": self.n_fft // 2 + 1, "mfcc": n * (1 + self.mfcc_deltas),
                 "chroma": self.n_chroma, "contrast": self.n_contrast_bands + 1}
        if kind in two_d:
            return two_d[kind], self.frames
        if kind == "stacked":
            return sum(self.groups(kind)), self.frames
        if kind == "stats":
            return (n + n * (n + 1) // 2,)
        if kind == "gtzan57":
            return (len(GTZAN57_COLUMNS),)
        if kind == "waveform":
            return 1, self.waveform_samples
        if kind in PRETRAINED_KINDS:
            return (pretrained.embedding_dim(kind, self.embedding_layer, self.embedding_pool),)
        if kind == "musicnn_mel":
            return 96, 187
        raise ValueError(f"unknown feature kind {kind!r}; valid kinds: {', '.join(FEATURE_KINDS)}")

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _needed(kinds: tuple[str, ...]) -> frozenset[str]:
    return frozenset(part for kind in kinds for part in _INGREDIENTS[kind])


def _gtzan_shares_stft(s: FeatureSettings) -> bool:
    return s.n_fft == _GTZAN_N_FFT and s.hop_length == _GTZAN_HOP


def chroma_filterbank(sr: int, n_fft: int, n_chroma: int = 12) -> np.ndarray:
    """``librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma)`` with its defaults, in numpy alone.

    The same Gaussian bumps per pitch class (tuning 0, octaves weighted around C5 with width 2, each
    FFT bin's column L2-normalised, rows starting at C): tests/test_features.py holds it to
    librosa's within 1e-12. Written out because ``librosa.filters`` imports ``scipy.signal`` on
    first use, about 2 s of a command's start-up (issue 16's fast start) for a 12 x 513 table.
    """
    freqs = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    bins = n_chroma * np.log2(freqs / (440.0 / 16))  # librosa.hz_to_octs, A4 = 440 Hz, tuning 0
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))  # the DC bin, 1.5 octaves below the first
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]))
    half = np.round(n_chroma / 2)
    dist = np.remainder(np.subtract.outer(bins, np.arange(n_chroma, dtype=float)).T + half + 10 * n_chroma,
                        n_chroma) - half
    wts = np.exp(-0.5 * (2 * dist / widths[None, :]) ** 2)
    norms = np.sqrt((wts ** 2).sum(axis=0, keepdims=True))
    wts = wts / np.where(norms < np.finfo(float).tiny, 1.0, norms)
    wts = wts * np.exp(-0.5 * ((bins / n_chroma - 5.0) / 2.0) ** 2)[None, :]
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, : n_fft // 2 + 1])


@lru_cache(maxsize=8)
def _filters(s: FeatureSettings) -> dict[str, torch.Tensor]:
    need = _needed(s.kinds)
    out = {"window": torch.hann_window(s.n_fft)}
    if "logmel" in need:
        mel = AF.melscale_fbanks(s.n_fft // 2 + 1, s.f_min, s.f_max or s.sample_rate / 2, s.n_mels,
                                 s.sample_rate, norm="slaney", mel_scale="slaney")
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the mm used here is stable
            warnings.simplefilter("ignore", UserWarning)
            # About 1.5 % of a mel filterbank is non-zero: a sparse product is ~8x cheaper than dense.
            out["mel"] = mel.T.contiguous().to_sparse_csr()
    if "mfcc" in need:
        out["dct"] = AF.create_dct(s.n_mfcc, s.n_mels, norm="ortho").T.contiguous()
    if "chroma" in need:
        out["chroma"] = torch.from_numpy(chroma_filterbank(s.sample_rate, s.n_fft, s.n_chroma).astype(np.float32))
    if "gtzan57" in need:
        out["gtzan_window"] = torch.hann_window(_GTZAN_N_FFT)
        out["gtzan_mel"] = torch.from_numpy(librosa.filters.mel(sr=s.sample_rate, n_fft=_GTZAN_N_FFT))
        out["gtzan_dct"] = AF.create_dct(20, 128, norm="ortho").T.contiguous()
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


def _with_deltas(mfcc: torch.Tensor, order: int) -> torch.Tensor:
    """MFCC rows, then ``order`` rows of deltas: HTK-style regression over 5 frames, edges repeated.

    The delta-delta is the delta of the delta (as HTK), which equals applying
    ``librosa.feature.delta(x, width=5, mode="nearest")`` twice (not librosa's ``order=2``).
    """
    rows = [mfcc]
    for _ in range(order):
        rows.append(AF.compute_deltas(rows[-1], win_length=5, mode="replicate"))
    return torch.cat(rows, dim=1)


def _stats(mfcc: torch.Tensor) -> torch.Tensor:
    """(n, n_mfcc, frames) -> (n, n_mfcc + triu) frame means, then the upper triangle (row-major,
    diagonal included) of the unbiased (``np.cov``'s default) covariance of the frame vectors."""
    m = mfcc.double()
    mean = m.mean(dim=2)
    centred = m - mean[:, :, None]
    cov = torch.matmul(centred, centred.transpose(1, 2)) / (m.shape[2] - 1)
    rows, cols = np.triu_indices(m.shape[1])
    return torch.cat([mean, cov[:, rows, cols]], dim=1).float()


def _contrast(power: torch.Tensor, s: FeatureSettings) -> torch.Tensor:
    """librosa's spectral contrast of the magnitude spectrogram, one clip at a time.

    librosa accepts a batch, but its dB step floors ``top_db`` below the peak of the whole batch,
    which would make a clip's values depend on its neighbours; per clip they do not.
    """
    mag = power.sqrt().numpy()
    out = [librosa.feature.spectral_contrast(S=m, sr=s.sample_rate, n_fft=s.n_fft, n_bands=s.n_contrast_bands,
                                             fmin=_CONTRAST_FMIN) for m in mag]
    return torch.from_numpy(np.stack(out).astype(np.float32))


def _median31(x: np.ndarray) -> np.ndarray:
    """Running median over 31 values along the rows of a 2-D array, edges mirrored: what librosa's
    HPSS gets from ``scipy.ndimage.median_filter(mode="reflect")``, about 6x faster."""
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, [(0, 0), (15, 15)], mode="symmetric"), 31,
                                                       axis=1)
    out = np.empty_like(x)
    for i in range(0, len(x), 64):  # 64 rows at a time: the partition copies 31 values per element
        out[i:i + 64] = np.partition(windows[i:i + 64], 15, axis=-1)[..., 15]
    return out


def _hpss(spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``librosa.decompose.hpss`` of one complex ``(freqs, frames)`` STFT, with its defaults
    (31-point median filters along time and frequency, soft masks of power 2, margin 1)."""
    mag = np.abs(spec)
    harm = _median31(mag)
    perc = np.ascontiguousarray(_median31(np.ascontiguousarray(mag.T)).T)
    mask_h = librosa.util.softmask(harm, perc, power=2.0, split_zeros=True)
    mask_p = librosa.util.softmask(perc, harm, power=2.0, split_zeros=True)
    return spec * mask_h, spec * mask_p


def _gtzan57(x: torch.Tensor, spec: torch.Tensor | None, s: FeatureSettings,
             f: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Kaggle GTZAN table's 57 statistics of each clip, with librosa's default parameters.

    Spectral features are taken from one 2048-point STFT (``spec`` when the settings share it);
    chroma (with its tuning estimate), HPSS and tempo are per clip, as the table computed them per
    song. Variances are population variances (``np.var``).
    """
    sr, n = s.sample_rate, x.shape[0]
    if spec is None:
        spec = torch.stft(x, _GTZAN_N_FFT, _GTZAN_HOP, window=f["gtzan_window"], center=True,
                          pad_mode="constant", return_complex=True)
    power = spec.real.square() + spec.imag.square()
    mag, y = power.sqrt().numpy(), x.numpy()
    logmel = _db(torch.matmul(f["gtzan_mel"], power), 80.0)  # librosa.power_to_db's defaults, per clip
    mfcc = torch.matmul(f["gtzan_dct"], logmel).numpy()
    # The table's tempo is librosa.beat.beat_track's: its onset envelope takes the median over mel
    # bands (onset_strength's default mean picks another tempo for 9 of the 30 dev songs).
    onset = librosa.onset.onset_strength(S=logmel.numpy(), sr=sr, aggregate=np.median)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr).reshape(n)
    parts = [_hpss(c) for c in spec.numpy()]
    harmonic, percussive = (torch.istft(torch.from_numpy(np.stack([p[i] for p in parts])), _GTZAN_N_FFT,
                                        _GTZAN_HOP, window=f["gtzan_window"], center=True,
                                        length=y.shape[1]).numpy() for i in (0, 1))
    series = [  # in GTZAN57_COLUMNS' order; statistics over all but the first axis
        np.stack([librosa.feature.chroma_stft(S=p, sr=sr) for p in power.numpy()]),
        librosa.feature.rms(y=y),
        librosa.feature.spectral_centroid(S=mag, sr=sr),
        librosa.feature.spectral_bandwidth(S=mag, sr=sr),
        librosa.feature.spectral_rolloff(S=mag, sr=sr),
        librosa.feature.zero_crossing_rate(y),
        harmonic, percussive,
    ]
    cols = [stat(a.reshape(n, -1), axis=1) for a in series for stat in (np.mean, np.var)]
    cols.append(tempo)
    cols += [stat(mfcc[:, i], axis=1) for i in range(20) for stat in (np.mean, np.var)]
    return torch.from_numpy(np.stack(cols, axis=1).astype(np.float32))


def _waveform(x: torch.Tensor, s: FeatureSettings) -> torch.Tensor:
    """(n, samples) -> (n, 1, waveform_samples) at ``waveform_rate``; amplitude kept."""
    y = x if s.waveform_rate == s.sample_rate else AF.resample(x, s.sample_rate, s.waveform_rate)
    n = s.waveform_samples  # torchaudio rounds the length up in float: pin it to the exact ceiling
    y = y[:, :n] if y.shape[1] >= n else torch.nn.functional.pad(y, (0, n - y.shape[1]))
    return y.unsqueeze(1)


def _device() -> torch.device:
    """Where the pretrained networks run: the GPU when this process may use one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _embeddings(x: torch.Tensor, s: FeatureSettings) -> dict[str, torch.Tensor]:
    """Every pretrained kind asked for (and ``musicnn_mel``, the networks' input: the clip's first
    3-s patch, ``(96, 187)``), from one resampling of the clips to 16 kHz."""
    from genre_ray.features.pretrained.musicnn import log_mel, patches

    rate = pretrained.SAMPLE_RATE
    y = x if s.sample_rate == rate else AF.resample(x, s.sample_rate, rate)
    out = {}
    if "musicnn_mel" in s.kinds:
        out["musicnn_mel"] = patches(log_mel(y))[:, 0].transpose(1, 2).contiguous()
    y = y.to(_device())
    out.update({kind: pretrained.embed(y, kind, s.embedding_layer, s.embedding_pool).float().cpu()
                for kind in s.kinds if kind in PRETRAINED_KINDS})
    return out


@torch.inference_mode()
def compute_features(clips: np.ndarray | torch.Tensor, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """Features of a batch of equal-length clips.

    Args:
        clips: ``(n_clips, clip_samples)`` float32 waveforms at ``settings.sample_rate``.
        settings: which features and their parameters.

    Returns:
        ``kind -> (n_clips, *settings.shape(kind))`` float32 arrays for every kind in
        ``settings.kinds`` (``shape`` assumes ``clip_samples`` long clips).

    Raises:
        ValueError: when ``clips`` is not a non-empty 2-D batch.
    """
    x = torch.as_tensor(clips, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"clips must be (n_clips, samples), got {tuple(x.shape)}")
    s, need = settings, _needed(settings.kinds)
    f = _filters(s)
    parts: dict[str, torch.Tensor] = {}
    spec = power = None
    if need & _SPECTRAL or ("gtzan57" in need and _gtzan_shares_stft(s)):
        # Zero padding at the edges, as librosa does, so the values match librosa's.
        spec = torch.stft(x, s.n_fft, s.hop_length, window=f["window"], center=True, pad_mode="constant",
                          return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (n, freqs, frames)
    if "logmel" in need:
        assert power is not None
        parts["logmel"] = _db(_mel(f["mel"], power), s.top_db)
    if "stft" in need:
        assert power is not None
        parts["stft"] = _db(power, s.top_db)
    if "mfcc" in need:
        base = torch.matmul(f["dct"], parts["logmel"])
        if "stats" in need:
            parts["stats"] = _stats(base)
        parts["mfcc"] = _with_deltas(base, s.mfcc_deltas)
    if "chroma" in need:
        assert power is not None
        chroma = torch.matmul(f["chroma"], power)
        parts["chroma"] = chroma / torch.clamp(chroma.amax(dim=1, keepdim=True), min=1e-10)
    if "contrast" in need:
        assert power is not None
        parts["contrast"] = _contrast(power, s)
    if "stacked" in need:
        parts["stacked"] = torch.cat([parts["logmel"], parts["mfcc"], parts["chroma"]], dim=1)
    if "gtzan57" in need:
        parts["gtzan57"] = _gtzan57(x, spec if _gtzan_shares_stft(s) else None, s, f)
    if "waveform" in need:
        parts["waveform"] = _waveform(x, s)
    if need & set(_AT_16K):
        parts.update(_embeddings(x, s))
    return {k: parts[k].numpy() for k in s.kinds}
