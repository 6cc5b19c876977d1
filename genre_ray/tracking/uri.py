"""The tracking URI, its reachability and the local store's lock: what a command checks before it
works, without importing MLflow (about 2 s), so that a search reads and featurizes its collection
first and a bad server still fails before any of it."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["TrackingError", "check_reachable", "default_tracking_uri", "git_commit", "store_lock"]


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and what to do."""


def default_tracking_uri(results_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the results folder."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(results_dir).expanduser().resolve() / 'mlflow.db'}"


def git_commit() -> str:
    """The commit the code runs from, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before Ray starts, when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)  # noqa: S310
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(f"tracking.uri {uri}: the MLflow server does not answer ({exc}); start it, "
                            "fix the URI, or unset it to use the local results/mlflow.db") from None


def store_lock(uri: str) -> Any:
    """A cross-process lock on a local SQLite store (``<db>.lock``); nothing for a server."""
    from contextlib import nullcontext

    from genre_ray.storage import file_lock

    if uri.startswith("sqlite:///"):
        return file_lock(uri[len("sqlite:///"):])
    return nullcontext()
