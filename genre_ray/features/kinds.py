"""The feature kinds, declared once: their input families, which are computed from audio, and their rules.

No torch, so that the config reads it before anything heavy is imported; :mod:`.spectral`, the
config and the model registry all take the kinds from here.
"""

from __future__ import annotations

import math

from genre_ray.features.pretrained import NETWORKS

__all__ = ["AUDIO_KINDS", "CONTRAST_FMIN", "FAMILY", "FEATURE_KINDS", "NON_AUDIO_KINDS", "PRETRAINED_KINDS",
           "contrast_error"]

#: The pretrained networks' clip embeddings (see :mod:`genre_ray.features.pretrained`).
PRETRAINED_KINDS = tuple(NETWORKS)

#: Feature kind -> the family of input it is, per clip (without the batch axis):
#: ``spectrogram`` (bins, frames); ``stacked`` a spectrogram whose rows are log-mel | MFCC | chroma;
#: ``vector`` (n,); ``waveform`` (1, samples); ``pretrained_input`` the pretrained networks' own
#: (96, 187) log-mel patch. A model declares the families it takes (:mod:`genre_ray.models.spec`).
FAMILY: dict[str, str] = {
    "logmel": "spectrogram", "stft": "spectrogram", "mfcc": "spectrogram", "chroma": "spectrogram",
    "contrast": "spectrogram", "stacked": "stacked", "image": "spectrogram",
    "stats": "vector", "gtzan57": "vector", "table": "vector", "waveform": "waveform",
    **{kind: "vector" for kind in PRETRAINED_KINDS},
    # their input: one 3-s 96-band log-mel patch per clip, for the fine-tuned ``pretrained`` model
    "musicnn_mel": "pretrained_input",
}

#: Kinds read from the source rather than computed from audio.
NON_AUDIO_KINDS = ("table", "image")
#: Kinds computed from audio, each a cached variant (:mod:`.spectral` computes exactly these).
AUDIO_KINDS = tuple(kind for kind in FAMILY if kind not in NON_AUDIO_KINDS)
FEATURE_KINDS = AUDIO_KINDS

#: The lowest band edge of spectral contrast (librosa.feature.spectral_contrast's default).
CONTRAST_FMIN = 200.0


def contrast_error(n_bands: int, sample_rate: float) -> str | None:
    """Why ``n_bands`` octave bands of spectral contrast do not fit ``sample_rate``, or None when they do.

    The top band starts at ``CONTRAST_FMIN * 2**(n_bands - 1)`` Hz, which must stay below the
    Nyquist frequency.
    """
    nyquist = sample_rate / 2
    if n_bands >= 1 and CONTRAST_FMIN * 2.0 ** (n_bands - 1) < nyquist:
        return None
    most = int(math.floor(math.log2(nyquist / CONTRAST_FMIN - 1e-9))) + 1 if nyquist > CONTRAST_FMIN else 0
    return (f"must be in [1, {most}] at sample_rate {sample_rate:g} (the top band starts at {CONTRAST_FMIN:g} "
            f"* 2**(n_contrast_bands - 1) Hz, which must stay below the Nyquist frequency {nyquist:g} Hz)")
