"""Module paths of saved models and searches from before the package moved into subpackages.

A saved classifier's ``model.pt`` (a pickled torch module) and ``model.joblib`` name the classes they
hold by module: a model saved by the flat layout names ``genre_ray.train.Standardized``,
``genre_ray.aggregate.SequenceAggregator`` or ``genre_ray.spaces.TrialPlan`` (a classical
checkpoint). :func:`old_module_paths` lets those names resolve, only while a saved model is read;
nothing else sees the old paths. ``tests/test_pre_move_models.py`` holds models saved before the move.

A Tune experiment begun before the move pickles the search's callbacks and search space with it
(``genre_ray.trial_runs.TrialRuns``, ``genre_ray.spaces.DefineByRun``, ``genre_ray._checks.Dist``):
``--resume`` restores and runs it under ``old_module_paths(SEARCH_MOVED)``; ``tests/test_pre_move_models.py``
reads back what Tune pickled for one that the flat layout started and a kill interrupted.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

#: old module -> where its pickled classes live now
MOVED = {
    "genre_ray.train": "genre_ray.training.wrappers",
    "genre_ray.aggregate": "genre_ray.training.aggregate",
    "genre_ray.augment": "genre_ray.training.augment",
    "genre_ray.spaces": "genre_ray.config.spaces",
}

#: old module -> its place now, for what a Tune experiment of the flat layout pickled (its
#: ``tuner.pkl`` and searcher state): the search's callbacks and reporter, its search space
SEARCH_MOVED = {
    "genre_ray._checks": "genre_ray.config.checks",
    "genre_ray.spaces": "genre_ray.config.spaces",
    "genre_ray.trial_runs": "genre_ray.search.trial_runs",
    "genre_ray.tuning": "genre_ray.search.tuning",
}


@contextmanager
def old_module_paths(moved: Mapping[str, str] = MOVED) -> Iterator[None]:
    """While reading a saved model (or, with :data:`SEARCH_MOVED`, restoring a search): the old module
    names as aliases of their new modules."""
    added = [old for old in moved if old not in sys.modules]
    for old in added:
        sys.modules[old] = importlib.import_module(moved[old])
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)
