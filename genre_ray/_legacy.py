"""Module paths of saved models from before the package moved into subpackages.

A saved classifier's ``model.pt`` (a pickled torch module) and ``model.joblib`` name the classes they
hold by module: a model saved by the flat layout names ``genre_ray.train.Standardized``,
``genre_ray.aggregate.SequenceAggregator`` or ``genre_ray.spaces.TrialPlan`` (a classical
checkpoint). :func:`old_module_paths` lets those names resolve, only while a saved model is read;
nothing else sees the old paths. ``tests/test_pre_move_models.py`` holds models saved before the move.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: old module -> where its pickled classes live now
MOVED = {
    "genre_ray.train": "genre_ray.training.wrappers",
    "genre_ray.aggregate": "genre_ray.training.aggregate",
    "genre_ray.augment": "genre_ray.training.augment",
    "genre_ray.spaces": "genre_ray.config.spaces",
}


@contextmanager
def old_module_paths() -> Iterator[None]:
    """While reading a saved model: the old module names as aliases of their new modules."""
    added = [old for old in MOVED if old not in sys.modules]
    for old in added:
        sys.modules[old] = importlib.import_module(MOVED[old])
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)
