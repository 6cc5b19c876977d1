"""Features of audio clips: the STFT family and hand-made statistics (:mod:`.spectral`) and the
embeddings of pretrained music networks (:mod:`.pretrained`).

``from genre_ray.features import FeatureSettings, compute_features`` imports :mod:`.spectral` (and
with it torch) when first used, so that the config can read the pretrained catalogue
(:mod:`genre_ray.features.pretrained`, no torch) without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FEATURE_KINDS", "GTZAN57_COLUMNS", "FeatureSettings", "compute_features"]


def __getattr__(name: str) -> Any:
    if name in ("pretrained", "spectral") or name.startswith("__"):  # submodules import as usual
        raise AttributeError(name)
    spectral = importlib.import_module("genre_ray.features.spectral")
    try:
        return getattr(spectral, name)
    except AttributeError:
        raise AttributeError(f"module 'genre_ray.features' has no attribute {name!r}") from None
