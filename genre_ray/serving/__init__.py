"""Serving: the song classifier, the registered pyfunc model, the predict and tag commands, tag writing.

- :mod:`~genre_ray.serving.classifier`: :class:`SongClassifier` (audio in, genres out; no MLflow,
  no Ray) and :class:`EnsembleClassifier`;
- :mod:`~genre_ray.serving.predict` and :mod:`~genre_ray.serving.tag`: the command lines (``tag``
  runs the classifier in Ray Data actors over a library);
- :mod:`~genre_ray.serving.tagwrite`: writing the genres into the files' own tags, with undo.

The MLflow pyfunc flavour of the classifier (``GenrePyfunc``, ``load``, ``save_model``) is MLflow
code, so it lives in :mod:`genre_ray.tracking.pyfunc`; its names are served from here too (lazily,
so importing the classifier costs no MLflow import). A registered model's own script does
``from genre_ray.serving import GenrePyfunc``.
"""

from __future__ import annotations

import importlib
from typing import Any

_CLASSIFIER = ("ENSEMBLE_KIND", "META_FILE", "NON_AUDIO_KINDS", "EnsembleClassifier", "ServingError",
               "SongClassifier")
_PYFUNC = ("GenrePyfunc", "input_example", "load", "log_model", "requirements", "save_model", "signature",
           "version_tags")

__all__ = [*_CLASSIFIER, *_PYFUNC]


def __getattr__(name: str) -> Any:
    if name in _CLASSIFIER:
        return getattr(importlib.import_module("genre_ray.serving.classifier"), name)
    if name in _PYFUNC:
        return getattr(importlib.import_module("genre_ray.tracking.pyfunc"), name)
    raise AttributeError(f"module 'genre_ray.serving' has no attribute {name!r}")
