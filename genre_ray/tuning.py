"""Ray Tune for one genre task: the Tuner, its per-trial MLflow callback, and the leaderboard.

``OptunaSearch`` gets a define-by-run space built from the YAML (:mod:`genre_ray.spaces`) and
``ASHAScheduler`` stops weak trials at its rungs. Trials are fed to MLflow from the driver, so
no worker ever writes to a tracking store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genre_ray.config import SearchConfig
from genre_ray.report import leaderboard_frame, stop_reason

__all__ = ["leaderboard", "ray_init", "tuner"]

log = logging.getLogger("genre_ray.search")


def ray_init(cfg: SearchConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False if address is None else None,
             logging_level=logging.WARNING, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False


def tuner(cfg: SearchConfig, data: dict[str, Any], tracker: Any, storage: Path, run_name: str,
          groups: dict[str, Any] | None = None, *, sampler: Any = None, early_stopping: bool = True,
          stop: Any = None) -> Any:
    """The Tuner of one task.

    Args:
        cfg: the validated search space.
        data: feature variant -> its trial data (one object store copy each, whichever trials use it).
        tracker: the MLflow tracker fed one child run per trial, or None for no tracking.
        storage: Tune's storage folder; ``run_name`` the experiment's folder in it.
        groups: row groups of stacked features (for the combined model).
        sampler: an Optuna sampler in place of TPE (the search benchmark passes a random one).
        early_stopping: ASHA on (the default) or off (every trial runs all its epochs).
        stop: a Tune stopper (e.g. a budget of trial-epochs), or None.
    """
    # Tune warns when keeping only the best checkpoints forces frequent experiment snapshots; on
    # small trials that is every few seconds and harmless, so the warning is only noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from genre_ray.spaces import define_by_run
    from genre_ray.train import train_trial

    s, res = cfg.search, cfg.resources
    spec = {"cpu": res["cpu"], "gpu": res["gpu"], "seed": cfg.train["seed"], "max_epochs": s["max_epochs"],
            "metric": s["metric"], "groups": groups or {}}
    trainable = tune.with_resources(tune.with_parameters(train_trial, data=data, spec=spec),
                                    {"cpu": res["cpu"], "gpu": res["gpu"]})
    searcher = OptunaSearch(space=define_by_run(cfg), metric=s["metric"], mode=cfg.mode,
                            sampler=sampler or tpe_sampler(s["seed"]))
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s["max_epochs"],
                              grace_period=s["grace_period"], reduction_factor=s["reduction_factor"]) \
        if early_stopping else None
    tune_config = tune.TuneConfig(metric=s["metric"], mode=cfg.mode, search_alg=searcher, scheduler=scheduler,
                                  num_samples=s["num_samples"], max_concurrent_trials=s["max_concurrent"],
                                  time_budget_s=s["time_budget_s"], reuse_actors=True)
    run_config = tune.RunConfig(
        name=run_name, storage_path=str(storage),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=s["metric"],
                                                checkpoint_score_order=cfg.mode),
        failure_config=tune.FailureConfig(max_failures=1),
        callbacks=[_trial_callback(tracker, cfg)] if tracker is not None else [], stop=stop, verbose=0)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def tpe_sampler(seed: int) -> Any:
    """Optuna's TPE for a conditional, parallel search.

    ``multivariate`` and ``group`` model parameters jointly within each branch of the zoo's
    define-by-run space (a model's own parameters appear only with that model), and
    ``constant_liar`` keeps concurrent trials from being suggested the same point.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():  # these options are marked experimental; they are stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def _trial_callback(tracker: Any, cfg: SearchConfig) -> Any:
    from ray import tune

    from genre_ray.spaces import resolve

    planned, metric, total = cfg.search["max_epochs"], cfg.search["metric"], cfg.search["num_samples"]

    class TrialRuns(tune.Callback):
        """One MLflow child run per trial, fed from the driver (no worker talks to MLflow).

        It also logs one line per trial start and end, in place of Tune's verbose tables.
        """

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tracker.start_trial(trial.trial_id, f"trial-{trial.trial_id}", trial.config)
            plan = resolve(trial.config)
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted({**plan.params, **plan.train}.items()))
            log.info("trial %s started: %s on %s: %s", trial.trial_id, plan.model, plan.kind, shown)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            metrics = {k: v for k, v in result.items()
                       if k.startswith(("val_", "train_")) and isinstance(v, (int, float))}
            tracker.log_trial_epoch(trial.trial_id, metrics, int(result.get("training_iteration", 0)))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            run = int(last.get("training_iteration", 0))
            why = stop_reason(None, run, int(last.get("planned_epochs", planned)),
                              bool(last.get("stopped_by_patience")))
            tracker.end_trial(trial.trial_id, "FINISHED", {"stop_reason": why})
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
            log.info("trial %s %s after %d epochs: %s %.4f (%d of %d trials done)", trial.trial_id, why, run,
                     metric, last.get(metric, float("nan")), min(done, total), total)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tracker.end_trial(trial.trial_id, "FAILED", {"stop_reason": "error"})
            log.warning("trial %s failed: %s (the search goes on)", trial.trial_id, info.get("error", ""))

    return TrialRuns()


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def leaderboard(results: Any, cfg: SearchConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    metric, planned = cfg.search["metric"], cfg.search["max_epochs"]
    rows, by_trial = [], {}
    for r in results:
        df = r.metrics_dataframe
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name
        row: dict[str, Any] = {"trial_id": tid}
        row.update({k: v for k, v in sorted(r.config.items())})
        if df is not None and metric in df:
            best = df[metric].idxmax() if cfg.mode == "max" else df[metric].idxmin()
            for m in ("val_song_acc", "val_song_bacc", "val_song_f1", "val_clip_acc", "val_clip_f1", "val_loss"):
                row[f"best_{m}"] = float(df.loc[best, m]) if m in df else np.nan
            row["best_epoch"] = int(df.loc[best, "training_iteration"])
            row["epochs"] = int(df["training_iteration"].max())
            row["wall_s"] = float(df["time_total_s"].max())
            row["finished_at"] = float(df["timestamp"].max())  # Unix s of the trial's last report
        else:
            row.update({f"best_{metric}": np.nan, "epochs": 0, "wall_s": np.nan})
        last = r.metrics or {}
        want = int(last.get("planned_epochs") or min(int(r.config.get("train.epochs", planned)), planned))
        row["stopped"] = stop_reason(str(r.error) if r.error else None, row["epochs"], want,
                                     bool(last.get("stopped_by_patience")))
        row["error"] = str(r.error).splitlines()[0][:200] if r.error else ""
        rows.append(row)
        by_trial[tid] = r
    return leaderboard_frame(rows, metric, cfg.mode), by_trial
