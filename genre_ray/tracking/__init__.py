"""Every MLflow call of genre_ray lives in this package.

- :mod:`~genre_ray.tracking.uri`: the tracking URI (``MLFLOW_TRACKING_URI`` or the local SQLite
  store), the fail-fast check of a server, the local store's lock. No MLflow import.
- :mod:`~genre_ray.tracking.runs`: :class:`Tracker`, a search's experiment, parent and trial runs,
  and the registry with its champion policy.
- :mod:`~genre_ray.tracking.blank`: a new local SQLite store starts as a copy of a blank one, built
  by MLflow once per MLflow version in the user's cache folder (saves 2 to 3 CPU-seconds a search).
- :mod:`~genre_ray.tracking.pyfunc`: the MLflow pyfunc flavour of the song classifier.

The names of ``runs`` are served from here lazily, so that ``from genre_ray.tracking import
check_reachable`` costs no MLflow import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from genre_ray.tracking.uri import TrackingError, check_reachable, default_tracking_uri, git_commit, store_lock

if TYPE_CHECKING:
    from genre_ray.tracking.runs import CHALLENGER, CHAMPION, PROBE_S, TEST_METRIC, Tracker

_RUNS = ("CHALLENGER", "CHAMPION", "PROBE_S", "TEST_METRIC", "Tracker")

__all__ = ["CHALLENGER", "CHAMPION", "PROBE_S", "TEST_METRIC", "Tracker", "TrackingError", "check_reachable",
           "default_tracking_uri", "git_commit", "store_lock"]


def __getattr__(name: str) -> Any:
    if name in _RUNS:
        return getattr(importlib.import_module("genre_ray.tracking.runs"), name)
    raise AttributeError(f"module 'genre_ray.tracking' has no attribute {name!r}")
