"""Decoding audio files to mono float32 at a fixed rate, and cutting songs into clips.

Everything that can be wrong with a file is reported as :class:`AudioError` with the path and
what to do, so the pipeline can skip the file, count it, and go on with the rest. A path may be a
URI (``s3://bucket/rock/a.wav``): such a file is read through its pyarrow filesystem.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
import soundfile as sf
import soxr

from genre_ray import storage

__all__ = ["AUDIO_EXTENSIONS", "AudioError", "clip_bounds", "cut_clips", "decode", "decode_clips",
           "downmix", "open_audio", "resample"]

#: Extensions read as audio, matched case-insensitively.
AUDIO_EXTENSIONS = (".wav", ".au", ".aiff", ".aif", ".flac", ".ogg", ".opus", ".mp3")

_MIN_SECONDS = 0.5
_SILENCE_RMS = 1e-5


class AudioError(Exception):
    """A file that cannot be used. ``reason`` is a short machine-readable category."""

    def __init__(self, path: str, reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail


def decode(path: str, sample_rate: int) -> np.ndarray:
    """Read a file as mono float32 at ``sample_rate``.

    NaN or infinite samples are zeroed when they are a small part of the file; a file that is
    mostly NaN, silent, or shorter than half a second is refused.

    Args:
        path: an audio file that soundfile can read (WAV, AU, AIFF, FLAC, OGG, MP3), as a path or
            a URI.
        sample_rate: the rate to resample to.

    Returns:
        A 1-D float32 array.

    Raises:
        AudioError: when the file cannot be read or decoded, or holds no usable audio.
    """
    try:
        with open_audio(path) as src:
            return _decode(path, src, sample_rate)
    except OSError as exc:  # a URI whose object cannot be read
        raise _undecodable(path, exc) from None


@contextmanager
def open_audio(path: str, header_only: bool = False) -> Iterator[str | IO[bytes]]:
    """What soundfile should read for ``path``: on a local disk the path itself (libsndfile opens
    it, the fast way), for a URI a seekable, buffered file object from its filesystem.

    Args:
        path: a path or URI.
        header_only: only the header will be read, so a remote file is read in small blocks.

    Raises:
        OSError: a URI whose object is missing or cannot be read.
    """
    if not storage.is_uri(path):
        yield path
        return
    with storage.open_input(path, storage.HEADER_BUFFER if header_only else storage.READ_BUFFER) as fh:
        yield fh


def _rewound(src: str | IO[bytes]) -> str | IO[bytes]:
    """``src`` ready to be read from the start again (a file object is shared by several reads)."""
    if not isinstance(src, str):
        src.seek(0)
    return src


def _decode(path: str, src: str | IO[bytes], sample_rate: int) -> np.ndarray:
    try:
        data, sr = sf.read(_rewound(src), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise _undecodable(path, exc) from None
    if data.size == 0 or sr <= 0:
        raise AudioError(path, "empty", "holds no audio samples; remove it or replace it")
    wave = _mono_finite(path, data)
    if wave.shape[0] / sr < _MIN_SECONDS:
        raise AudioError(path, "too_short", f"is only {wave.shape[0] / sr:.2f} s long "
                         f"(at least {_MIN_SECONDS} s is needed)")
    _refuse_silence(path, wave)
    return resample(wave, sr, sample_rate)


def _undecodable(path: str, exc: BaseException) -> AudioError:
    return AudioError(path, "undecodable", f"cannot decode ({exc}); check that it is a complete audio file "
                      "in a format libsndfile reads")


def _mono_finite(path: str, data: np.ndarray) -> np.ndarray:
    """Channels averaged; a few NaN or infinite samples zeroed, a file of mostly NaN refused."""
    wave = downmix(data, axis=1)
    bad = ~np.isfinite(wave)
    if bad.any():
        if bad.mean() > 0.01:
            raise AudioError(path, "nan", f"{bad.mean():.0%} of its samples are NaN or infinite; "
                             "re-export the file")
        wave = np.where(bad, 0.0, wave).astype(np.float32)
    return wave


def downmix(data: np.ndarray, axis: int = 1) -> np.ndarray:
    """The mean of the channels of a 2-D float32 array (channels along ``axis``), as 1-D float32.

    Equal, sample for sample, to ``data.mean(axis=axis)`` (numpy sums up to 7 channels in order,
    then divides; more go to numpy itself), and about ten times faster on a decoded (frames, 2)
    array: numpy's reduction over a short inner axis costs 20 ms on 30 s of stereo, more than the
    resampling.
    """
    channels = data.shape[axis]
    if channels > 7:  # numpy sums 8 and more pairwise: its own mean, to stay the same samples
        return data.mean(axis=axis, dtype=np.float32)
    channel = [data[:, c] if axis == 1 else data[c] for c in range(channels)]  # views, no copies
    if channels == 1:
        return channel[0]
    wave = np.add(channel[0], channel[1], dtype=np.float32)
    for c in channel[2:]:
        wave += c
    wave /= np.float32(channels)
    return wave


def _refuse_silence(path: str, wave: np.ndarray) -> None:
    flat = np.ascontiguousarray(wave, dtype=np.float32).ravel()
    if flat.size == 0 or float(np.sqrt(np.dot(flat, flat) / flat.size)) < _SILENCE_RMS:
        raise AudioError(path, "silent", "is silent; remove it or check the export")


def resample(wave: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    """Mono ``wave`` from ``sr`` to ``sample_rate``, float32 and contiguous.

    ``librosa.resample(res_type="soxr_hq")`` sample for sample, without importing
    ``librosa.core.audio``: that import (scipy.signal with it) costs seconds in every fresh process,
    paid by each ``tag`` actor, each ``predict`` run and each featurizing worker on first use."""
    if sr != sample_rate:
        n = math.ceil(wave.shape[0] * (float(sample_rate) / sr))  # librosa's length, its float steps too
        out = soxr.resample(wave, sr, sample_rate, quality="soxr_hq")
        wave = out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))
    return np.ascontiguousarray(wave, dtype=np.float32)


def decode_clips(path: str, sample_rate: int, clip_samples: int, overlap: float,
                 max_clips: int | None = None) -> np.ndarray:
    """The clips of a song, ``(n_clips, clip_samples)`` float32 mono at ``sample_rate``.

    A song with more than ``max_clips`` clips is represented by ``max_clips`` clips evenly spread
    over it, and only those stretches of the file are read: a 20-minute file, or one with many
    channels at a high rate, is decoded in memory bounded by the clips that are used.

    Raises:
        AudioError: as :func:`decode`.
    """
    try:
        with open_audio(path) as src:
            return _clips(path, src, sample_rate, clip_samples, overlap, max_clips)
    except OSError as exc:  # a URI whose object cannot be read
        raise _undecodable(path, exc) from None


def _clips(path: str, src: str | IO[bytes], sample_rate: int, clip_samples: int, overlap: float,
           max_clips: int | None) -> np.ndarray:
    try:
        info = sf.info(_rewound(src))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise _undecodable(path, exc) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "empty", "holds no audio samples; remove it or replace it")
    starts = clip_bounds(int(info.frames * sample_rate / info.samplerate), clip_samples, overlap)
    if max_clips is None or len(starts) <= max_clips:
        return cut_clips(_decode(path, src, sample_rate), clip_samples, overlap)
    picked = [starts[i] for i in np.linspace(0, len(starts) - 1, max_clips).round().astype(int)]
    ratio = info.samplerate / sample_rate
    span = int(np.ceil(clip_samples * ratio)) + 16
    clips = np.zeros((len(picked), clip_samples), np.float32)
    try:
        with sf.SoundFile(_rewound(src)) as f:
            for i, start in enumerate(picked):
                f.seek(min(int(start * ratio), max(0, info.frames - 1)))
                block = f.read(span, dtype="float32", always_2d=True)
                if block.size:
                    wave = resample(_mono_finite(path, block), info.samplerate, sample_rate)[:clip_samples]
                    clips[i, : len(wave)] = wave
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise _undecodable(path, exc) from None
    _refuse_silence(path, clips.ravel())
    return clips


def clip_bounds(n_samples: int, clip_samples: int, overlap: float) -> list[int]:
    """Start sample of every clip: hop = clip * (1 - overlap); a short song gives one clip."""
    hop = max(1, int(round(clip_samples * (1.0 - overlap))))
    if n_samples <= clip_samples:
        return [0]
    count = 1 + (n_samples - clip_samples) // hop
    return [i * hop for i in range(count)]


def cut_clips(wave: np.ndarray, clip_samples: int, overlap: float) -> np.ndarray:
    """Cut a waveform into ``(n_clips, clip_samples)``, zero-padding a song shorter than a clip."""
    if wave.shape[0] < clip_samples:
        wave = np.pad(wave, (0, clip_samples - wave.shape[0]))
    starts = clip_bounds(wave.shape[0], clip_samples, overlap)
    view = np.lib.stride_tricks.sliding_window_view(wave, clip_samples)
    return np.ascontiguousarray(view[starts])


def n_clips(seconds: float, sample_rate: int, clip_seconds: float, overlap: float) -> int:
    """How many clips a song of ``seconds`` gives."""
    clip = int(round(clip_seconds * sample_rate))
    return len(clip_bounds(int(math.floor(seconds * sample_rate)), clip, overlap))
