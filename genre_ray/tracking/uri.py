"""The tracking URI, its reachability and the local store's lock: what a command checks before it
works, without importing MLflow (about 2 s), so that a search reads and featurizes its collection
first and a bad server still fails before any of it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["TrackingError", "check_reachable", "default_tracking_uri", "git_commit", "store_lock", "unusable_store"]


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


def unusable_store(uri: str, exc: BaseException) -> str:
    """The one-line message for a store MLflow cannot open or set up (``exc``: what failed)."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's error wraps the driver's
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return (f"tracking.uri {uri}: MLflow cannot use this store ({type(cause).__name__}: {first}); if another "
            "run is creating or upgrading it right now, run again when that has finished; if the file is "
            "damaged, move it aside (the next run starts a new store there) or set tracking.uri to another store")


def _check_sqlite_file(uri: str) -> None:
    """A local SQLite store's file, when there is one, must be a database (a new one is made when absent)."""
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if not db.is_file():
        return
    try:
        con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
        try:
            con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):  # another run writing: MLflow's own retries wait for it
            return
        raise TrackingError(unusable_store(uri, exc)) from None


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before Ray starts, when an http(s) tracking server does not answer, or when a local
    SQLite store's file is not a database (damaged, or not MLflow's)."""
    if uri.startswith("sqlite:///"):
        _check_sqlite_file(uri)
        return
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
