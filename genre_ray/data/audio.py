"""Decoding audio files to mono float32 at a fixed rate, and cutting songs into clips.

Everything that can be wrong with a file is reported as :class:`AudioError` with the path and
what to do, so the pipeline can skip the file, count it, and go on with the rest. A path may be a
URI (``s3://bucket/rock/a.wav``): such a file is read through its pyarrow filesystem.

A file damaged partway (a FLAC or MP3 cut short) is decoded up to the damage. :func:`audio_length`
tells such a file apart: the length its container declares against the length that decodes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any

import mutagen
import numpy as np
import soundfile as sf
import soxr
from mutagen.mp3 import MP3, BitrateMode
from mutagen.ogg import OggFileType, OggPage
from mutagen.wave import WAVE

from genre_ray import storage

__all__ = ["AUDIO_EXTENSIONS", "AudioError", "Length", "audio_length", "clip_bounds", "cut_clips", "decode",
           "decode_clips", "downmix", "open_audio", "resample", "undecodable"]

#: Extensions read as audio, matched case-insensitively.
AUDIO_EXTENSIONS = (".wav", ".au", ".aiff", ".aif", ".flac", ".ogg", ".opus", ".mp3")

_MIN_SECONDS = 0.5
_SILENCE_RMS = 1e-5
_BLOCK = 4096  # frames per read where a file is read up to its damage
# A file is cut short when it decodes this much less than it declares: 0.1 s and 0.5 % leave room
# for an MP3's encoder delay and padding, which some encoders count and others do not.
_SHORT_S, _SHORT_FRACTION = 0.1, 0.005
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError)
_UNKNOWN_SIZE = 0xFFFFFFFF - 0xFF  # a RIFF size this large is the streaming writers' "unknown"


class AudioError(Exception):
    """A file that cannot be used.

    ``reason`` is a short machine-readable category, ``detail`` says in plain words what is wrong
    with the file and what to do, ``message`` is the decoder's own words ("" when it said nothing).
    """

    def __init__(self, path: str, reason: str, detail: str, message: str = "") -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail
        self.message = message

    def record(self) -> str:
        """The error as one text value (``reason: detail``, the decoder's words on a second line),
        as the feature cache stores it; :meth:`from_record` reads it back."""
        return f"{self.reason}: {self.detail}" + (f"\n{self.message}" if self.message else "")

    @classmethod
    def from_record(cls, path: str, text: str) -> AudioError:
        """The error of ``path`` from :meth:`record`'s text (or an older cache's ``reason: detail``)."""
        head, _, message = text.partition("\n")
        reason, _, detail = head.partition(": ")
        return cls(path, reason, detail, message)


_DISK = "check its permissions and that the disk is reachable"
# libsndfile's messages, by words they contain, in the user's words, with what to do about them.
_PLAIN = (
    (("not recognised", "possibly a pipe"),
     "is not an audio file the decoder can read (format not recognised)",
     "check that it is audio and that its extension is right, or remove it"),
    (("malformed",), "has a damaged header (a known format, but malformed)", "re-export it or replace it"),
    (("unsupported encoding", "not supported"), "uses an encoding the decoder does not support",
     "convert it to WAV or FLAC"),
    (("lost sync", "psf_fseek", "end of file", "unexpected"),
     "is damaged partway (the decoder lost its place in the audio data)", "re-export it or replace it"),
    (("system error",), "cannot be read from its disk", _DISK),
)


def undecodable(path: str, exc: BaseException) -> AudioError:
    """The :class:`AudioError` for a file the decoder refused, in plain words naming the file; the
    decoder's own message is kept in ``message``."""
    name = os.path.basename(str(path).rstrip("/")) or str(path)
    said = str(exc)
    if not storage.is_uri(path) and os.path.isfile(path) and os.path.getsize(path) == 0:
        plain, advice = "is an empty file (0 bytes)", "copy it again from where it came from, or remove it"
    elif isinstance(exc, OSError) and not isinstance(exc, sf.LibsndfileError):
        plain, advice = f"cannot be read ({exc.strerror or said})", _DISK
    else:
        plain, advice = next(((p, a) for words, p, a in _PLAIN if any(w in said.lower() for w in words)),
                             ("cannot be decoded", "check that it is a complete audio file in a format "
                              "libsndfile reads"))
    return AudioError(path, "undecodable", f"{name} {plain}; {advice}", said)


@dataclass(frozen=True)
class Length:
    """How long a file says it is, and how long it decodes."""

    promised_s: float | None  #: what its container declares; None where it declares nothing
    read_s: float  #: what the decoder gives
    truncated: bool  #: it ends before it says, or (Ogg) without its end-of-stream page


def audio_length(path: str) -> Length:
    """The declared and the decodable length of a file, to find files cut short.

    The declared length is the one the container states: a WAV's data-chunk size, an AIFF's frame
    count, a FLAC's STREAMINFO total, an MP3's Xing/Info/VBRI frame count (read by mutagen). An
    Ogg stream declares none, but one cut short lacks its end-of-stream page. The decodable length
    is what libsndfile reads: it trims a WAV or AIFF to the bytes present; a FLAC or MP3 is tried
    at its declared end, and only when that fails is it decoded up to the damage.

    Raises:
        AudioError: when the file cannot be decoded at all.
    """
    try:
        with open_audio(path, header_only=True) as src:
            promised, complete = _declared(src)
            frames, rate = _readable_frames(src)
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from None
    read = frames / rate if rate > 0 else 0.0
    short = promised is not None and promised - read > _SHORT_S + _SHORT_FRACTION * promised
    return Length(promised, read, short or not complete)


def _declared(src: str | IO[bytes]) -> tuple[float | None, bool]:
    """The length ``src``'s container declares (None: none), and whether an Ogg stream ends whole."""
    try:
        meta = mutagen.File(_rewound(src))
        info: Any = getattr(meta, "info", None)
        if info is None:
            return None, True
        if isinstance(meta, OggFileType):  # the length mutagen gives is the last page's: not a promise
            with open(src, "rb") if isinstance(src, str) else nullcontext(_rewound(src)) as fh:
                last = OggPage.find_last(fh, info.serial)
            return None, last is not None and last.last
        if isinstance(meta, MP3) and info.bitrate_mode == BitrateMode.UNKNOWN:
            return None, True  # no Xing/Info/VBRI header: mutagen's length is guessed from the file size
        if isinstance(meta, WAVE) and \
                info.length * info.sample_rate * info.channels * info.bits_per_sample / 8 >= _UNKNOWN_SIZE:
            return None, True  # a WAV written to a pipe: its data size says "unknown" (0xFFFFFFFF)
        length = float(info.length or 0.0)
    except Exception:  # noqa: BLE001 - mutagen raises many types on damaged files; the decoder judges them
        return None, True
    return (length if length > 0 else None), True


def _readable_frames(src: str | IO[bytes]) -> tuple[int, int]:
    """``(frames that decode, sample rate)``: the header's count when its last frames read, else
    the frames counted up to the damage."""
    with sf.SoundFile(_rewound(src)) as f:
        rate, frames, tail = f.samplerate, f.frames, min(f.frames, _BLOCK)
        try:
            if frames <= 0:
                return 0, rate
            f.seek(frames - tail)
            if len(f.read(tail, dtype="float32")) == tail:
                return frames, rate
        except sf.LibsndfileError:
            pass  # a failed seek leaves the file unusable: count in a fresh one
    with sf.SoundFile(_rewound(src)) as f:
        return _read_blocks(f)[0], rate


def _read_blocks(f: sf.SoundFile, keep: bool = False) -> tuple[int, np.ndarray]:
    """Read ``f`` to its end or to its first damage: the frame count, and the frames if ``keep``."""
    parts, n = [], 0
    while True:
        try:
            block = f.read(_BLOCK, dtype="float32", always_2d=True)
        except sf.LibsndfileError:
            break
        n += len(block)
        if keep:
            parts.append(block)
        if len(block) < _BLOCK:
            break
    return n, np.concatenate(parts) if parts else np.zeros((0, f.channels), np.float32)


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
        raise undecodable(path, exc) from None


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
        data, sr = _read_all(src)
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from None
    if data.size == 0 or sr <= 0:
        raise AudioError(path, "empty", "holds no audio samples; remove it or replace it")
    wave = _mono_finite(path, data)
    if wave.shape[0] / sr < _MIN_SECONDS:
        raise AudioError(path, "too_short", f"is only {wave.shape[0] / sr:.2f} s long "
                         f"(at least {_MIN_SECONDS} s is needed)")
    _refuse_silence(path, wave)
    return resample(wave, sr, sample_rate)


def _read_all(src: str | IO[bytes]) -> tuple[np.ndarray, int]:
    """Every frame of ``src`` and its rate; a file damaged partway gives the frames before the damage."""
    try:
        return sf.read(_rewound(src), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        with sf.SoundFile(_rewound(src)) as f:  # opens: the damage is in the audio data, not the header
            n, data = _read_blocks(f, keep=True)
        if n == 0:
            raise exc from None
        return data, f.samplerate


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
        raise undecodable(path, exc) from None


def _clips(path: str, src: str | IO[bytes], sample_rate: int, clip_samples: int, overlap: float,
           max_clips: int | None) -> np.ndarray:
    try:
        info = sf.info(_rewound(src))
        frames = info.frames
        promised = int(frames * sample_rate / info.samplerate) if info.samplerate > 0 else 0
        if max_clips is not None and len(clip_bounds(promised, clip_samples, overlap)) > max_clips:
            frames = _readable_frames(src)[0]  # a file cut short: clips spread over what decodes
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from None
    if frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "empty", "holds no audio samples; remove it or replace it")
    starts = clip_bounds(int(frames * sample_rate / info.samplerate), clip_samples, overlap)
    if max_clips is None or len(starts) <= max_clips:
        return cut_clips(_decode(path, src, sample_rate), clip_samples, overlap)
    picked = [starts[i] for i in np.linspace(0, len(starts) - 1, max_clips).round().astype(int)]
    ratio = info.samplerate / sample_rate
    span = int(np.ceil(clip_samples * ratio)) + 16
    clips = np.zeros((len(picked), clip_samples), np.float32)
    try:
        with sf.SoundFile(_rewound(src)) as f:
            for i, start in enumerate(picked):
                f.seek(min(int(start * ratio), max(0, frames - 1)))
                block = f.read(min(span, frames - f.tell()), dtype="float32", always_2d=True)
                if block.size:
                    wave = resample(_mono_finite(path, block), info.samplerate, sample_rate)[:clip_samples]
                    clips[i, : len(wave)] = wave
    except _DECODE_ERRORS as exc:
        raise undecodable(path, exc) from None
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
