"""The Tune callbacks of a search: MLflow's child run per trial, fed from the driver, the repair
of checkpoints that a resumed search's snapshot names but Tune has since deleted, and the status
table Tune prints as the search goes (:class:`SearchReporter`).

Apart from :mod:`genre_ray.search.tuning` so that importing the search engine does not import Ray Tune:
a search must check its tracking server before anything heavy starts.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.tune import Callback, CLIReporter

from genre_ray._ray_workarounds import repair_checkpoints
from genre_ray.config import SearchConfig
from genre_ray.search.report import stop_reason

__all__ = ["SearchReporter", "StaleCheckpoints", "StopSignal", "TrialRuns", "repair_checkpoints", "stop_signals"]

log = logging.getLogger("genre_ray.search")


#: Trackers of the searches running in this process, by Tune run name. The trial callback
#: (:class:`genre_ray.search.trial_runs.TrialRuns`) is pickled into the experiment (``tuner.pkl``) without
#: its tracker and finds it here, so a restored search logs to the tracker re-attached to its
#: parent run, not to a stale copy.
TRACKERS: dict[str, Any] = {}

class TrialRuns(Callback):
    """One MLflow child run per trial, fed from the driver (no worker talks to MLflow).

    It also logs one line per trial start and end, in place of Tune's verbose tables.
    """

    def __init__(self, run_name: str, cfg: SearchConfig) -> None:
        self.run_name = run_name
        self.planned, self.metric = cfg.search.max_epochs, cfg.search.metric
        self.total = cfg.search.num_samples

    @property
    def tracker(self) -> Any:
        return TRACKERS.get(self.run_name)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from genre_ray.config.spaces import resolve

        if self.tracker is not None:
            self.tracker.start_trial(trial.trial_id, f"trial-{trial.trial_id}", trial.config)
        plan = resolve(trial.config)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted({**plan.params, **plan.train}.items()))
        log.info("trial %s started: %s on %s: %s", trial.trial_id, plan.model, plan.kind, shown)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("trial %s failed (%s); retrying it from its last checkpoint", trial.trial_id,
                    str(info.get("error", "")).splitlines()[0][:200] if info.get("error") else "lost worker")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = {k: v for k, v in result.items()
                   if k.startswith(("val_", "train_")) and isinstance(v, (int, float))}
        if self.tracker is not None:
            self.tracker.log_trial_epoch(trial.trial_id, metrics, int(result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        run = int(last.get("training_iteration", 0))
        why = stop_reason(None, run, int(last.get("planned_epochs", self.planned)),
                          bool(last.get("stopped_by_patience")))
        if self.tracker is not None:
            self.tracker.end_trial(trial.trial_id, "FINISHED", {"stop_reason": why})
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
        log.info("trial %s %s after %d epochs: %s %.4f (%d of %d trials done)", trial.trial_id, why, run,
                 self.metric, last.get(self.metric, float("nan")), min(done, self.total), self.total)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.tracker is not None:
            self.tracker.end_trial(trial.trial_id, "FAILED", {"stop_reason": "error"})
        log.warning("trial %s failed: %s (the search goes on)", trial.trial_id, info.get("error", ""))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # A resumed search may hold child runs of trials that started after the interrupted run's
        # last snapshot: Tune does not know them, so they describe nothing in this search.
        if self.tracker is not None:
            stale = self.tracker.drop_stale_trials({t.trial_id for t in trials})
            if stale:
                log.info("removed %d MLflow runs of trials lost with the interrupted run's last snapshot", stale)


class SearchReporter(CLIReporter):
    """Tune's status table of a search, at most every ``every`` seconds (see
    :func:`genre_ray.search.tuning.progress_options`), its rows sorted by the objective.

    The last table is as compact as the others (ten trial rows): the search's own leaderboard
    follows it. Tune gives the objective and its mode through ``setup``, from the ``TuneConfig``.
    """

    def __init__(self, metric_columns: dict[str, str], parameter_columns: dict[str, str],
                 every: float) -> None:
        super().__init__(metric_columns=metric_columns, parameter_columns=parameter_columns,
                         max_report_frequency=int(every), max_progress_rows=10, max_error_rows=5,
                         sort_by_metric=True,
                         # given, not left to Tune's global verbosity at construction: a search after
                         # another in one process (a second task, a benchmark) would lose its table
                         print_intermediate_tables=True)
        self.metric: str | None = None

    def setup(self, start_time: float | None = None, total_samples: int | None = None, metric: str | None = None,
              mode: str | None = None, **kwargs: Any) -> None:
        super().setup(start_time=start_time, total_samples=total_samples, metric=metric, mode=mode, **kwargs)
        self.metric = metric

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        # Tune sorts the finished rows by the objective and fails (None < float) on a trial that
        # ended before its first result: one a time budget or a stopper ended while it started.
        # Such trials are left out of the table and counted in its header instead.
        early = [t for t in trials if t.status == "TERMINATED" and (t.last_result or {}).get(self.metric) is None]
        if early:
            trials = [t for t in trials if t not in early]
            sys_info = (*sys_info, f"{len(early)} trial(s) ended before their first result (not in the table)")
        super().report(trials, False, *sys_info)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


#: The signal (SIGINT or SIGTERM) that ended each of this process's searches, by Tune run name
#: (see :class:`StopSignal`).
INTERRUPTED: dict[str, int] = {}


class StopSignal(Callback):
    """Notes a Ctrl-C (SIGINT) or a SIGTERM that ends the search's Tune run.

    Tune catches SIGINT itself: it stops the trials, saves the experiment's state, and its
    ``fit()`` returns as if the search were over. At setup (Tune's handler is in place by then) this
    wraps that handler, so the search learns of the signal and does not score the test songs or
    register a model from the trials it had so far; ``--resume`` goes on from Tune's saved state.
    SIGTERM (what a cluster's scheduler sends before it takes a node back, and ``kill``'s default)
    gets the same graceful stop instead of Ray's immediate exit; a second SIGTERM exits at once.
    """

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler) or threading.current_thread() is not threading.main_thread():
            return  # Tune's fit in another thread catches no signal either
        term_before = signal.getsignal(signal.SIGTERM)
        run_name = self.run_name

        def noted(signum: int, frame: Any) -> None:
            if run_name in INTERRUPTED and signum == signal.SIGTERM:  # a second one: no more waiting
                signal.signal(signal.SIGTERM, term_before)
                if callable(term_before):
                    term_before(signum, frame)
                raise SystemExit(128 + signum)
            INTERRUPTED[run_name] = signum
            tune_handler(signal.SIGINT, frame)

        signal.signal(signal.SIGINT, noted)
        signal.signal(signal.SIGTERM, noted)


@contextmanager
def stop_signals(run_name: str) -> Iterator[Any]:
    """Around a search's ``fit()``: yields a function that returns the signal that ended it (0 when
    none did), and puts the SIGINT and SIGTERM handlers from before the fit back afterwards (Tune
    leaves its own in place, and a Ctrl-C during the refit or the registration would only have
    been logged by it)."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    INTERRUPTED.pop(run_name, None)
    try:
        yield lambda: INTERRUPTED.get(run_name, 0)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in before.items():
                if handler is not None:
                    signal.signal(sig, handler)


class StaleCheckpoints(Callback):
    """Before a restored search starts its trials, each trial resumes from a checkpoint that exists.

    Tune deletes a beaten checkpoint as soon as a better one is registered, but it writes its
    experiment snapshot only every few seconds. A driver killed in between leaves a snapshot whose
    trials name deleted checkpoints, and newer ones on disk that it never heard of; restored as it
    is, such a trial fails ("does not exist on storage anymore") on every retry and ends in error.
    At the first step (before any trial actor starts), :func:`repair_checkpoints` fixes each trial.
    """

    def __init__(self) -> None:
        self._done = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._done:
            return
        self._done = True
        for trial in trials:
            if trial.status != "TERMINATED":
                repair_checkpoints(trial)


