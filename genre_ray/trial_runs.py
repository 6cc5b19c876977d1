"""The Tune callback that feeds MLflow one child run per trial, from the driver.

Apart from :mod:`genre_ray.tuning` so that importing the search engine does not import Ray Tune:
a search must check its tracking server before anything heavy starts.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from genre_ray.config import SearchConfig
from genre_ray.report import stop_reason
from genre_ray.tuning import TRACKERS

__all__ = ["TrialRuns"]

log = logging.getLogger("genre_ray.search")


class TrialRuns(Callback):
    """One MLflow child run per trial, fed from the driver (no worker talks to MLflow).

    It also logs one line per trial start and end, in place of Tune's verbose tables.
    """

    def __init__(self, run_name: str, cfg: SearchConfig) -> None:
        self.run_name = run_name
        self.planned, self.metric = cfg.search["max_epochs"], cfg.search["metric"]
        self.total = cfg.search["num_samples"]

    @property
    def tracker(self) -> Any:
        return TRACKERS.get(self.run_name)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from genre_ray.spaces import resolve

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


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
