"""A new local SQLite store starts as a copy of a blank one that MLflow built once per MLflow version.

MLflow makes a new SQLite store by running its whole migration history, about 50 Alembic steps:
2 to 3 CPU-seconds each time a search starts in a new results folder (measured, MLflow 3.17). The
blank store is made by MLflow itself, once, in the user's cache folder (``GENRE_RAY_CACHE_DIR``, else
``$XDG_CACHE_HOME/genre_ray``, else ``~/.cache/genre_ray``). Its Default experiment is removed, so
that MLflow creates it again when it first opens a copy, with that store's artifact location and
time. Whatever goes wrong here (a cache folder that cannot be written, a damaged blank) leaves the
store to MLflow, which builds it the slow way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from pathlib import Path

import mlflow
import pyarrow.fs as pafs
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from genre_ray.storage import file_lock, put_file

__all__ = ["blank_store", "cache_dir", "seed_sqlite_store"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where genre_ray keeps what it builds once per machine."""
    env = os.environ.get("GENRE_RAY_CACHE_DIR")
    if env:
        return Path(env).expanduser().absolute()
    return (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "genre_ray").absolute()


def _is_blank(path: Path) -> bool:
    """A readable SQLite store with a schema version and no experiment."""
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            version = con.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = con.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return len(version) == 1 and experiments == 0


def blank_store() -> Path:
    """The blank store for this MLflow version, built (under a lock) when missing or damaged."""
    path = cache_dir() / f"mlflow-{mlflow.__version__}-blank.db"
    if _is_blank(path):
        return path
    with file_lock(path):
        if _is_blank(path):
            return path
        # a name never used before: MLflow keeps each URI's store (and engine) for the process's life
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
        try:
            MlflowClient(f"sqlite:///{tmp}").search_experiments()  # MLflow creates and migrates it
            con = sqlite3.connect(tmp)
            try:
                with con:
                    con.execute("DELETE FROM experiments")
            finally:
                con.close()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("built a blank MLflow %s store at %s, for new local stores to start from",
                 mlflow.__version__, path)
    return path


def seed_sqlite_store(uri: str) -> bool:
    """Copy the blank store to a local SQLite URI's file when that file does not exist yet.

    Call it under :func:`genre_ray.tracking.uri.store_lock`. False when the URI is not a new local
    SQLite file, or when the blank cannot be built or copied: MLflow then builds the store itself.
    """
    if not uri.startswith("sqlite:///") or "?" in uri:
        return False
    db = Path(uri[len("sqlite:///"):])
    if db.exists() or not db.parent.is_dir():
        return False
    try:
        put_file(pafs.LocalFileSystem(), str(db.absolute()), blank_store().read_bytes())
    except (OSError, sqlite3.Error, MlflowException) as exc:
        log.debug("no blank MLflow store for %s (%s); MLflow builds it", uri, exc)
        return False
    return True
