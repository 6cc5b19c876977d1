"""Every MLflow call of a search: the experiment, its runs and the registry.

Layout: one experiment per genre task; one parent run per search; one child run per trial
(its hyperparameters and per-epoch metrics as step metrics); the best model logged on the
parent run and registered as ``genre-<task>`` with the ``champion`` alias moved only when it
beats the current champion on the same test split.

The local default needs no server: a SQLite store at ``results/mlflow.db`` with artifacts
under ``results/mlartifacts``. A tracking problem during a search is logged and the search
goes on: results/ still gets the leaderboard and summary.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from genre_ray._faults import pause_point
from genre_ray.tracking.blank import seed_sqlite_store
from genre_ray.tracking.uri import (
    TrackingError,
    check_reachable,
    default_tracking_uri,
    git_commit,
    store_lock,
    unusable_store,
)

__all__ = ["CHALLENGER", "CHAMPION", "TEST_METRIC", "Tracker", "TrackingError", "check_reachable",
           "default_tracking_uri", "git_commit", "store_lock"]

log = logging.getLogger(__name__)


@contextmanager
def _registry_prints_follow_logging() -> Iterator[None]:
    """Keep MLflow's registry prints ("Successfully registered model ...", "Created version ...")
    off the console when the root logger is above INFO (``-q``), as its INFO log lines are.

    MLflow writes them with its ``eprint`` to its own event stream, not through ``logging``; its
    ``disable_logging()`` / ``enable_logging()`` switch that stream, and this restores it after.
    The search's own summary says which version it registered.
    """
    from mlflow.utils import logging_utils

    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        yield
        return
    was = logging_utils.MLFLOW_LOGGING_STREAM.enabled
    logging_utils.disable_logging()
    try:
        yield
    finally:
        if was:
            logging_utils.enable_logging()

CHAMPION, CHALLENGER = "champion", "challenger"
TEST_METRIC = "test_song_acc"


#: Retries of a call that found the SQLite store locked by another search's write.
LOCKED_RETRIES = 6


def _flat_params(params: dict[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())]


#: Words of the errors that mean the tracking server is away (not that a call was wrong).
_OUTAGE = ("Max retries exceeded", "Connection refused", "Failed to establish", "timed out", "Timeout",
           "RemoteDisconnected", "Connection aborted", "Connection reset", "503", "502", "504")
#: Seconds between two checks that an away server answers again.
PROBE_S = 10.0
BACKLOG_FILE = "backlog.pkl"


def _outage(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(word in text for word in _OUTAGE)


class _StandIn:
    """A run created while the server was away: ``.info.run_id`` is its stand-in id."""

    def __init__(self, run_id: str) -> None:
        self.info = type("Info", (), {"run_id": run_id})()


class Tracker:
    """A search's view of MLflow: its experiment, parent run and the trials' child runs.

    When an http(s) tracking server goes away mid-search, the calls it misses are kept in order (a
    run that could not be created gets a stand-in id) and made once it answers again; what is
    still missing at the end is saved under ``spool`` (a registered model as its saved folder),
    and ``--resume`` of the finished search logs it (:meth:`replay`).

    Args:
        uri: the tracking URI.
        experiment: the experiment's name (created when missing).
        artifact_root: where a new experiment of a local store keeps its artifacts.
        spool: the folder for what could not be logged (``results/<search>/tracking_backlog``).
    """

    def __init__(self, uri: str, experiment: str, artifact_root: str | Path | None = None,
                 spool: str | Path | None = None) -> None:
        self.uri = uri
        self.ok = True
        self.spool = Path(spool) if spool is not None else None
        self.backlog: list[dict[str, Any]] = []  # calls the away server missed, oldest first
        self._stand_ins: dict[str, str] = {}  # stand-in run id -> the real one, once created
        self._next_probe = 0.0
        check_reachable(uri)
        if uri.startswith(("http://", "https://")):  # an away server costs seconds a call, not minutes
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        mlflow.set_tracking_uri(uri)
        try:
            with store_lock(uri):  # a new SQLite store is created (copied or migrated) by one process at a time
                seed_sqlite_store(uri)
                self.client = MlflowClient(uri)
                self.experiment_id = self._experiment(experiment, artifact_root)
        except MlflowException as exc:
            raise TrackingError(f"tracking.uri {uri}: cannot open experiment {experiment!r} ({exc}); "
                                "check the URI and that the store is writable") from None
        except SQLAlchemyError as exc:  # MLflow setting up a SQL store: a damaged file, or another run's upgrade
            raise TrackingError(unusable_store(uri, exc)) from None
        self.parent_id: str | None = None
        self._children: dict[str, str] = {}
        self._params: dict[str, dict[str, str]] = {}

    def _experiment(self, experiment: str, artifact_root: str | Path | None) -> str:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if artifact_root is not None and not self.uri.startswith(("http://", "https://")):
            location = (Path(artifact_root).expanduser().resolve() / experiment).as_uri()
        return str(self.client.create_experiment(experiment, artifact_location=location))

    # ---------------------------------------------------------------------------- safety net
    def _safe(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run the client's ``method``; on failure warn once and keep the search going.

        A SQLite store that another search holds locked for a moment is retried with backoff. While
        the server is away the call joins the backlog (a run it would create gets a stand-in id,
        which is returned).
        """
        if not self.ok:
            return None
        entry = {"what": what, "method": method, "args": args, "kwargs": kwargs}
        if self.backlog and not self._flush():
            return self._defer(entry)
        try:
            return self._attempt(getattr(self.client, method), args, kwargs)
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop a search
            if _outage(exc):
                log.warning("MLflow %s failed at %s: the server is away (%s). The search goes on; what it "
                            "cannot log now is logged when the server answers again, or by --resume",
                            what, self.uri, str(exc).splitlines()[0][:200])
                self._next_probe = time.monotonic() + PROBE_S
                return self._defer(entry)
            self.ok = False
            log.warning("MLflow %s failed at %s (%s); the search goes on, results/ has everything, "
                        "but later tracking calls are skipped", what, self.uri, exc)
            return None

    def _attempt(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        for attempt in range(LOCKED_RETRIES + 1):
            try:
                return fn(*self._real(args), **self._real(kwargs))
            except Exception as exc:
                if "database is locked" in str(exc) and attempt < LOCKED_RETRIES:
                    time.sleep(0.2 * 2 ** attempt)
                    continue
                raise
        return None

    def _defer(self, entry: dict[str, Any]) -> Any:
        """Keep a call for later; a run it would create gets a stand-in id (returned as a run)."""
        if entry["method"] == "create_run":
            entry["stand_in"] = f"pending-{len(self._stand_ins) + len(self.backlog)}-{os.getpid()}"
            self.backlog.append(entry)
            return _StandIn(entry["stand_in"])
        self.backlog.append(entry)
        return None

    def _real(self, value: Any) -> Any:
        """``value`` with stand-in run ids replaced by the real ones (in tuples, lists and dicts)."""
        if isinstance(value, str):
            return self._stand_ins.get(value, value)
        if isinstance(value, tuple):
            return tuple(self._real(v) for v in value)
        if isinstance(value, list):
            return [self._real(v) for v in value]
        if isinstance(value, dict):
            return {k: self._real(v) for k, v in value.items()}
        if isinstance(value, RunTag):
            return RunTag(value.key, self._real(value.value))
        return value

    def _flush(self, force: bool = False) -> bool:
        """Make the backlog's calls in order; whether it is empty now. Probes at most every PROBE_S."""
        if not self.backlog:
            return True
        if not force and time.monotonic() < self._next_probe:
            return False
        while self.backlog:
            entry = self.backlog[0]
            fn = self._register_saved if entry["method"] == "_register_saved" else getattr(self.client, entry["method"])
            try:
                result = self._attempt(fn, entry["args"], entry["kwargs"])
            except Exception as exc:  # noqa: BLE001
                if _outage(exc):
                    self._next_probe = time.monotonic() + PROBE_S
                    return False
                log.warning("MLflow %s (kept while the server was away) failed at %s (%s); left out",
                            entry["what"], self.uri, exc)
                result = None
            if "stand_in" in entry and result is not None:
                self._stand_ins[entry["stand_in"]] = result.info.run_id
            self.backlog.pop(0)
        log.info("MLflow at %s answers again: logged what it missed", self.uri)
        return True

    def save_backlog(self) -> Path | None:
        """Write what is still missing to ``spool`` (for ``--resume``); the file, or None when nothing is."""
        if not self.backlog or self.spool is None:
            return None
        import pickle

        self.spool.mkdir(parents=True, exist_ok=True)
        path = self.spool / BACKLOG_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps({"uri": self.uri, "backlog": self.backlog, "stand_ins": self._stand_ins,
                                      "experiment_id": self.experiment_id, "parent_id": self.parent_id}))
        os.replace(tmp, path)
        log.warning("MLflow at %s was away: %d calls (runs, metrics%s) could not be logged; they are kept in "
                    "%s, and --resume logs them once the server answers", self.uri, len(self.backlog),
                    ", the registered model" if any(e["method"] == "_register_saved" for e in self.backlog)
                    else "", path)
        return path

    def replay(self) -> int | None:
        """Log a finished search's saved backlog (see :meth:`save_backlog`); the calls made, or None
        when there is none. Raises :class:`TrackingError` when the server is still away."""
        import pickle

        path = self.spool / BACKLOG_FILE if self.spool is not None else None
        if path is None or not path.is_file():
            return None
        try:
            saved = pickle.loads(path.read_bytes())  # noqa: S301 - written by this project, in its own results
            self.backlog, self._stand_ins, self.parent_id = saved["backlog"], saved["stand_ins"], saved["parent_id"]
        except Exception as exc:  # noqa: BLE001 - a cut or foreign file: unpickling raises many types
            raise TrackingError(f"{path} cannot be read ({type(exc).__name__}: {exc}); the MLflow calls it kept "
                                "are lost, but results/ has the search's files. Put back an intact copy and "
                                "--resume again, or move it aside") from None
        n = len(self.backlog)
        if not self._flush(force=True):
            self.save_backlog()
            raise TrackingError(f"tracking.uri {self.uri}: still away; {len(self.backlog)} of {n} calls are "
                                f"kept in {path}: --resume again when it answers")
        path.unlink()
        return n

    # ---------------------------------------------------------------------------- runs
    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str | None:
        """Open the search's parent run and return its id."""
        run = self._safe("start run", "create_run", self.experiment_id, run_name=name,
                         tags={"genre_ray.kind": "search", **tags})
        if run is None:
            return None
        self.parent_id = run.info.run_id
        self._safe("log params", "log_batch", self.parent_id, params=_flat_params(params))
        return self.parent_id

    def resume_parent(self, run_id: str) -> None:
        """Re-attach to the parent run of an interrupted search, and to its trials' child runs.

        The parent run is reopened (status RUNNING); each child run is found by its trial id, so a
        trial that Tune resumes logs to its own run and no trial gets a second one.

        Raises:
            TrackingError: when the run is not in this store (another tracking URI, or deleted).
        """
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"tracking.uri {self.uri}: the interrupted search's parent run {run_id} is not "
                                f"there ({exc}); resume with the tracking URI it used, or start afresh "
                                "without --resume") from None
        if run.info.lifecycle_stage == "deleted":
            raise TrackingError(f"tracking.uri {self.uri}: the interrupted search's parent run {run_id} was "
                                "deleted; start afresh without --resume")
        self.parent_id = run_id
        self._safe("reopen run", "update_run", run_id, "RUNNING")
        children = self._safe("find trial runs", "search_runs", [self.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=50000) or []
        for child in children:
            trial_id = child.data.tags.get("genre_ray.trial_id")
            if trial_id:
                self._children[trial_id] = child.info.run_id
                self._params[trial_id] = dict(child.data.params)
        log.info("re-attached to MLflow parent run %s with %d trial runs", run_id, len(self._children))

    def start_trial(self, trial_id: str, name: str, params: dict[str, Any], kind: str = "trial") -> None:
        """Open a child run for a trial under the parent run (or reopen its own, for a resumed trial).

        ``kind`` is the run's ``genre_ray.kind`` tag: ``trial``, or ``refit`` for the winner trained again.
        """
        if self.parent_id is None:
            return
        flat = _flat_params(params)
        if trial_id in self._children:
            if self._params.get(trial_id) == {p.key: p.value for p in flat}:
                self._safe("reopen trial run", "update_run", self._children[trial_id], "RUNNING")
                return
            # The same id with other parameters: a trial that started after the interrupted run's
            # last snapshot, which Tune does not know about. Its run describes nothing that happened
            # in this search any more, so it goes, and the new trial gets a run of its own.
            self._safe("delete stale trial run", "delete_run", self._children.pop(trial_id))
        tags = {"mlflow.parentRunId": self.parent_id, "genre_ray.kind": kind, "genre_ray.trial_id": trial_id}
        run = self._safe("start trial run", "create_run", self.experiment_id, run_name=name, tags=tags)
        if run is not None:
            self._children[trial_id] = run.info.run_id
            self._params[trial_id] = {p.key: p.value for p in flat}
            self._safe("log params", "log_batch", run.info.run_id, params=flat)

    def drop_stale_trials(self, trial_ids: set[str]) -> int:
        """Delete the child runs of trials that the finished search does not have; returns how many.

        Only a resumed search has them: trials started after the interrupted run's last snapshot.
        """
        stale = [t for t in self._children if t not in trial_ids]
        for trial_id in stale:
            self._safe("delete stale trial run", "delete_run", self._children.pop(trial_id))
        return len(stale)

    def log_trial_epoch(self, trial_id: str, metrics: dict[str, float], step: int) -> None:
        """Per-epoch metrics of a trial, as step metrics (learning curves in the UI)."""
        run_id = self._children.get(trial_id)
        if run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._safe("log metrics", "log_batch", run_id, metrics=batch)

    def end_trial(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        """Close a trial's run with FINISHED or FAILED and why it stopped."""
        run_id = self._children.get(trial_id)
        if run_id is None:
            return
        self._safe("set tags", "log_batch", run_id,
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self._safe("end run", "set_terminated", run_id, status)

    def finish_parent(self, metrics: dict[str, float], tags: dict[str, str], artifacts: list[Path],
                      status: str = "FINISHED") -> None:
        """Log the search's final metrics, tags and files, and close the parent run."""
        if self.parent_id is None:
            return
        now = int(time.time() * 1000)
        self._safe("log results", "log_batch", self.parent_id,
                   metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for path in artifacts:
            if path.exists():
                self._safe("log artifact", "log_artifact", self.parent_id, str(path))
        self._safe("end run", "set_terminated", self.parent_id, status)
        if self.backlog and not self._flush(force=True):  # still away at the end: kept for --resume
            self.save_backlog()

    # ---------------------------------------------------------------------------- registry
    def register_model(self, classifier: Any, name: str, test_score: float, split_id: str,
                       version_tags: dict[str, str], promote: bool = False) -> dict[str, Any] | None:
        """Log the classifier as a pyfunc model on the parent run, register it, apply the champion policy.

        The new version becomes ``champion`` when there is none, when ``promote`` is set, or when
        its test score beats the champion's on the same split; otherwise it is ``challenger``. The
        version's tags record the decision, its score and the champion's it was compared with, and
        what the model takes (:func:`genre_ray.serving.version_tags`).

        Args:
            classifier: a :class:`genre_ray.serving.SongClassifier`.
            name: the registered model (``genre-<task>``).
            test_score: its song accuracy on the test split.
            split_id: the identity of that split.
            version_tags: more tags for the version (they win over the classifier's own).
            promote: make it the champion whatever the scores.

        Returns:
            ``{"name", "version", "alias", "reason", "model_uri", "run_model_uri"}`` or None if
            tracking failed.
        """
        if self.parent_id is None or not self.ok:
            return None
        if self.backlog and not self._flush():
            self._defer_register(classifier, name, test_score, split_id, version_tags, promote)
            return None
        try:
            return self._attempt(self._register, (classifier, name, test_score, split_id, version_tags, promote), {})
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop a search
            if _outage(exc):
                self._defer_register(classifier, name, test_score, split_id, version_tags, promote)
                return None
            self.ok = False
            log.warning("MLflow register model failed at %s (%s); the search goes on, results/ has everything, "
                        "but later tracking calls are skipped", self.uri, exc)
            return None

    def _defer_register(self, classifier: Any, *rest: Any) -> None:
        """Save the classifier under ``spool`` and keep its registration for when the server answers."""
        if self.spool is None:
            log.warning("MLflow at %s is away: the model is not registered", self.uri)
            return None
        folder = classifier.save(self.spool / f"model-{len(self.backlog)}")
        self.backlog.append({"what": "register model", "method": "_register_saved", "args": (str(folder), *rest),
                             "kwargs": {}})
        return None

    def _register_saved(self, folder: str, *rest: Any) -> dict[str, Any]:
        from genre_ray.serving.classifier import SongClassifier

        return self._register(SongClassifier.load(folder), *rest)

    def _register(self, classifier: Any, name: str, test_score: float, split_id: str,
                  version_tags: dict[str, str], promote: bool) -> dict[str, Any]:
        import genre_ray.tracking.pyfunc as pyfunc

        with mlflow.start_run(run_id=self._real(self.parent_id)), _registry_prints_follow_logging():
            info = pyfunc.log_model(classifier, registered_model_name=name)
        version = str(info.registered_model_version)
        pause_point("register.before_alias")  # the kill tests stop here: a version without alias or tags
        with store_lock(self.uri):  # read the champion and move the alias as one step against another search
            return self._place(classifier, name, version, info, test_score, split_id, version_tags, promote)

    def _place(self, classifier: Any, name: str, version: str, info: Any, test_score: float, split_id: str,
               version_tags: dict[str, str], promote: bool) -> dict[str, Any]:
        import genre_ray.tracking.pyfunc as pyfunc

        current = None
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            pass
        alias, reason = self._decide(current, test_score, split_id, promote)
        self.client.set_registered_model_alias(name, alias, version)
        tags = {**pyfunc.version_tags(classifier), **version_tags, TEST_METRIC: f"{test_score:.6f}",
                "split_id": split_id, "decision": reason, "alias_at_registration": alias}
        if current is not None:  # the score it was compared with, beside its own
            tags.update({"compared_with_version": str(current.version),
                         f"compared_with_{TEST_METRIC}": current.tags.get(TEST_METRIC, "unknown"),
                         "compared_with_split_id": current.tags.get("split_id", "unknown")})
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, str(v))
        return {"name": name, "version": version, "alias": alias, "reason": reason,
                "model_uri": f"models:/{name}@{alias}", "run_model_uri": info.model_uri}

    @staticmethod
    def _decide(current: Any, score: float, split_id: str, promote: bool) -> tuple[str, str]:
        if promote:
            return CHAMPION, "promoted explicitly (--promote)"
        if current is None:
            return CHAMPION, "first model for this task"
        old_split = current.tags.get("split_id")
        try:
            old = float(current.tags.get(TEST_METRIC, "nan"))
        except ValueError:
            old = float("nan")
        if old_split != split_id:
            return CHALLENGER, (f"champion v{current.version} was tested on another split ({old_split}); "
                                "scores are not comparable, use --promote to replace it")
        if score > old:
            return CHAMPION, f"{TEST_METRIC} {score:.4f} beats champion v{current.version} ({old:.4f})"
        return CHALLENGER, f"{TEST_METRIC} {score:.4f} does not beat champion v{current.version} ({old:.4f})"
