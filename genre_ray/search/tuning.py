"""Ray Tune for one genre task: the Tuner, its per-trial MLflow callback, and the leaderboard.

``OptunaSearch`` gets a define-by-run space built from the YAML (:mod:`genre_ray.config.spaces`) and
``ASHAScheduler`` stops weak trials at its rungs. Trials are fed to MLflow from the driver, so
no worker ever writes to a tracking store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genre_ray._legacy import SEARCH_MOVED, old_module_paths
from genre_ray._ray_workarounds import cut_snapshot, repair_trial_results, unpin
from genre_ray.config import Search, SearchConfig
from genre_ray.search.report import leaderboard_frame, stop_reason

__all__ = ["MAX_TRIAL_FAILURES", "REPORT_EVERY_S", "ResourceError", "autoscaling_worker_types",
           "check_resources", "make_sampler", "startup_trials", "StudyJournalError", "check_study",
           "study_storage", "can_restore", "cut_snapshot_of", "repair_trial_results_of", "finished_trials",
           "leaderboard", "parameter_columns", "progress_options", "ray_init", "restore", "resume_fit", "space_draws",
           "trial_data", "tuner"]

log = logging.getLogger("genre_ray.search")


def ray_init(cfg: SearchConfig) -> None:
    import ray

    from genre_ray.features.pipeline import ray_data_progress_off

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:  # a private local Ray needs no token (as in genre_ray.tag); a cluster keeps its auth mode
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=address, include_dashboard=False if address is None else None,
             logging_level=logging.WARNING, log_to_driver=True)
    ray_data_progress_off()


MAX_TRIAL_FAILURES = 3


class ResourceError(RuntimeError):
    """A trial asks for more than any node of the cluster can ever give; the message says what."""


#: Where ``ray up`` leaves the cluster's launcher config on the head node: its node types tell
#: what the autoscaler can still add.
AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"


def check_resources(cfg: SearchConfig, nodes: list[dict[str, Any]] | None = None,
                    autoscaler_config: str | os.PathLike[str] | None = AUTOSCALER_CONFIG) -> None:
    """Fail at once when no node can ever run one trial, instead of leaving trials pending for ever.

    A trial fits when one alive node has its CPUs and GPUs, or when the cluster launcher's config
    (on a ``ray up`` head) has a node type with them that the autoscaler may start.

    Args:
        cfg: the search (its ``resources``).
        nodes: ``ray.nodes()`` (read from the running cluster when None).
        autoscaler_config: the launcher's config to read node types from, if it exists.

    Raises:
        ResourceError: naming the request, the nodes the cluster has, and what to change.
    """
    need = {"CPU": float(cfg.resources.cpu), "GPU": float(cfg.resources.gpu)}
    need = {k: v for k, v in need.items() if v > 0}
    if nodes is None:
        import ray

        nodes = ray.nodes()
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if any(_fits(r, need) for r in alive):
        return
    types = _node_types(autoscaler_config)
    scalable = [name for name, t in types.items() if t["max_workers"] > 0 and _fits(t["resources"], need)]
    asked = ", ".join(f"{v:g} {k}" for k, v in need.items())
    if scalable:
        log.info("no node has %s for a trial yet; the autoscaler can start %s nodes", asked, " or ".join(scalable))
        return
    have = "; ".join(sorted({_show(r) for r in alive})) or "no alive nodes"
    extra = f"; the autoscaler's node types offer at most {'; '.join(_show(t['resources']) for t in types.values())}" \
        if types else "; no autoscaler config, so no nodes will be added"
    hint = ("Set resources.gpu to 0 (or --gpus-per-trial 0) to train on CPUs, or add GPU nodes" if "GPU" in need
            and not any(r.get("GPU", 0) >= need["GPU"] for r in alive) else
            "Lower resources.cpu (--cpus-per-trial) to at most the CPUs of one node, or add larger nodes")
    raise ResourceError(f"resources: each trial asks for {asked} (resources.cpu, resources.gpu), but no node of "
                        f"this Ray cluster can ever give that: {len(alive)} node(s) with {have}{extra}. {hint}.")


def autoscaling_worker_types(autoscaler_config: str | os.PathLike[str] | None = AUTOSCALER_CONFIG) -> list[str]:
    """The worker node types that the cluster launcher's autoscaler may start (none off a ``ray up`` head)."""
    return [name for name, t in _node_types(autoscaler_config).items() if t["max_workers"] > 0 and not t["head"]]


def _fits(resources: dict[str, Any], need: dict[str, float]) -> bool:
    return all(float(resources.get(k, 0)) >= v - 1e-9 for k, v in need.items())


def _show(resources: dict[str, Any]) -> str:
    return ", ".join(f"{float(resources.get(k, 0)):g} {k}" for k in ("CPU", "GPU"))


def _node_types(path: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    """Node types of a cluster launcher config: name -> resources and max_workers; {} if none."""
    if path is None:
        return {}
    file = Path(path).expanduser()
    if not file.is_file():
        return {}
    import yaml

    try:
        doc = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read the autoscaler config %s (%s); assuming no nodes will be added", file, exc)
        return {}
    head = doc.get("head_node_type")
    return {name: {"resources": t.get("resources") or {}, "head": name == head,
                   "max_workers": 1 if name == head else int(t.get("max_workers", doc.get("max_workers", 0)) or 0)}
            for name, t in (doc.get("available_node_types") or {}).items()}


def tuner(cfg: SearchConfig, data: dict[str, Any], tracker: Any, storage: str | Path, run_name: str,
          groups: dict[str, Any] | None = None, *, sampler: Any = None, early_stopping: bool = True,
          stop: Any = None, journal: str | Path | None = None) -> Any:
    """The Tuner of one task.

    Args:
        cfg: the validated search space.
        data: feature variant -> its trial data (one object store copy each, whichever trials use it),
            best as the reference :func:`trial_data` gives, which leaves the store when the fit is over.
        tracker: the MLflow tracker fed one child run per trial, or None for no tracking.
        storage: Tune's storage: a local or NFS folder, or an ``s3://`` / ``gs://`` URI; ``run_name``
            the experiment's folder in it.
        groups: row groups of stacked features (for the combined model).
        sampler: an Optuna sampler in place of TPE (the search benchmark passes a random one).
        early_stopping: ASHA on (the default) or off (every trial runs all its epochs).
        stop: a Tune stopper (e.g. a budget of trial-epochs), or None.
        journal: an Optuna journal file that persists the study (named ``run_name``) as trials
            finish, for ``optuna-dashboard`` and for ``--resume``; None keeps it in memory.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from genre_ray.config.spaces import define_by_run

    s = cfg.search
    searcher = OptunaSearch(space=define_by_run(cfg), metric=s.metric, mode=cfg.mode,
                            sampler=sampler or make_sampler(s), study_name=run_name,
                            storage=study_storage(journal) if journal is not None else None)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.max_epochs,
                              grace_period=s.grace_period, reduction_factor=s.reduction_factor) \
        if early_stopping else None
    tune_config = tune.TuneConfig(metric=s.metric, mode=cfg.mode, search_alg=searcher, scheduler=scheduler,
                                  num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent,
                                  time_budget_s=s.time_budget_s, reuse_actors=True)
    from genre_ray.search.trial_runs import TRACKERS, StaleCheckpoints, StopSignal, TrialRuns

    if tracker is not None:
        TRACKERS[run_name] = tracker

    fs, where = _storage(storage)
    run_config = tune.RunConfig(
        name=run_name, storage_path=where, storage_filesystem=fs,
        # Best and last per trial: Tune always keeps the latest checkpoint besides the
        # ``num_to_keep`` best, so a trial resumes from where it stopped and the search's winner
        # is scored from its best epoch; every other checkpoint is deleted as soon as it is beaten.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=s.metric,
                                                checkpoint_score_order=cfg.mode),
        # A trial lost with its node (or its worker) is retried from its last checkpoint.
        failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_FAILURES),
        # Stale checkpoints first: a restored trial must name a checkpoint that exists before it starts.
        callbacks=[StaleCheckpoints(), StopSignal(run_name),
                   *([TrialRuns(run_name, cfg)] if tracker is not None else [])],
        stop=stop, **progress_options(cfg))
    return tune.Tuner(_trainable(cfg, data, groups), tune_config=tune_config, run_config=run_config)


#: Seconds between two of Tune's status tables during a search.
REPORT_EVERY_S = 30
#: The most searched parameters the status table has columns for (the first ones of the space).
MAX_PARAMETER_COLUMNS = 8


def progress_options(cfg: SearchConfig) -> dict[str, Any]:
    """How Tune shows a search: ``RunConfig``'s ``verbose`` and ``progress_reporter``.

    Tune's :class:`~ray.tune.CLIReporter` prints a compact status table every
    :data:`REPORT_EVERY_S` seconds and at the end: the trials running, terminated (finished or
    stopped by ASHA, whose count of stopped trials heads the table), pending and failed; the best
    trial so far by the objective with its parameters; and a row per trial with the searched
    parameters, the objective, its epochs and seconds. Nothing is shown when the search's log does
    not log INFO (``-q``).
    """
    _legacy_output()
    if not log.isEnabledFor(logging.INFO):
        return {"verbose": 0, "progress_reporter": None}
    from genre_ray.search.trial_runs import SearchReporter

    metric = cfg.search.metric
    return {"verbose": 1, "progress_reporter": SearchReporter(
        metric_columns={metric: metric, "training_iteration": "epochs", "time_total_s": "seconds"},
        parameter_columns=parameter_columns(cfg), every=REPORT_EVERY_S)}


def _legacy_output() -> None:
    """Tune's output engine that takes a progress reporter (``RAY_AIR_NEW_OUTPUT=0``, unless set).

    The default engine ignores a given reporter; it prints a table of every trial's configuration
    when it starts and of its results when it ends, and its heading even at ``verbose=0``.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def parameter_columns(cfg: SearchConfig) -> dict[str, str]:
    """The status table's parameter columns: the searched parameters that every trial has (in a
    zoo, those of one model are absent from the others' trials), by their short names."""
    draws = space_draws(cfg)
    names = [n for n in draws[0] if all(n in d for d in draws)][:MAX_PARAMETER_COLUMNS]
    short = {n: "model" if n == "model.name" else n.split(".", 1)[1] if n.startswith(("model.", "train."))
             else n for n in names}
    return short if len(set(short.values())) == len(short) else {n: n for n in names}


def restore(cfg: SearchConfig, data: dict[str, Any], tracker: Any, experiment: str,
            groups: dict[str, Any] | None = None) -> Any:
    """The Tuner of an interrupted search, restored from its experiment folder (local or URI).

    Tune restores the trials, the ASHA scheduler and the Optuna searcher (its study with every
    finished and running trial) from the experiment's snapshot; unfinished trials continue from
    their latest checkpoint and trials that failed are retried from theirs. The MLflow callback
    is pickled without its tracker: ``tracker`` (re-attached to the same parent run) takes its place.
    """
    from ray import tune

    from genre_ray.search.trial_runs import TRACKERS

    if tracker is not None:
        TRACKERS[_run_name(experiment)] = tracker
    _legacy_output()  # the reporter, pickled with the experiment's RunConfig, is the one shown
    fs, where = _storage(experiment)
    return tune.Tuner.restore(where, trainable=_trainable(cfg, data, groups), resume_unfinished=True,
                              resume_errored=True, storage_filesystem=fs)


def resume_fit(cfg: SearchConfig, data: dict[str, Any], tracker: Any, experiment: str,
               groups: dict[str, Any] | None = None) -> Any:
    """Finish an interrupted search: its :func:`restore`d Tuner's ``fit()`` (a ``ResultGrid``).

    An experiment begun before the package moved into subpackages pickled its callbacks, reporter and
    search space under their old module names (``genre_ray.trial_runs``, ``genre_ray.spaces``...):
    Tune reads its ``tuner.pkl`` in ``Tuner.restore`` and its searcher's state in ``fit``, both while
    those names resolve (:data:`genre_ray._legacy.SEARCH_MOVED`).
    """
    with old_module_paths(SEARCH_MOVED):
        return restore(cfg, data, tracker, experiment, groups).fit()


def finished_trials(storage: Any, study_name: str) -> int:
    """How many trials of the study ``study_name`` in ``storage`` finished (complete or pruned); 0
    when it has none or there is no such study."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done for t in study.get_trials(deepcopy=False))


def cut_snapshot_of(experiment: str) -> str | None:
    """The file of ``experiment``'s last Tune snapshot that a kill cut short, if one was
    (:func:`genre_ray._ray_workarounds.cut_snapshot`); None when it is whole or absent."""
    import pyarrow.fs as pafs

    fs, where = _storage(experiment)
    return cut_snapshot(fs or pafs.LocalFileSystem(), where)


def repair_trial_results_of(experiment: str) -> list[str]:
    """Rewrite the trial results of ``experiment`` that a kill cut short
    (:func:`genre_ray._ray_workarounds.repair_trial_results`); the trial folders repaired."""
    import pyarrow.fs as pafs

    fs, where = _storage(experiment)
    return repair_trial_results(fs or pafs.LocalFileSystem(), where)


def can_restore(experiment: str) -> bool:
    """Whether ``experiment`` (a folder or URI) holds a Tune experiment that can be restored."""
    from ray import tune

    try:
        fs, where = _storage(experiment)
        return bool(tune.Tuner.can_restore(where, storage_filesystem=fs))
    except Exception:  # noqa: BLE001 - an unreadable location cannot be restored
        return False


def _storage(location: str | Path) -> tuple[Any, str]:
    """Tune's storage as (pyarrow filesystem or None, path): a URI's options (endpoint, region,
    credentials) live in its filesystem, so Tune never has to parse them out of a joined path."""
    from genre_ray.storage import filesystem, is_uri

    if not is_uri(str(location)):
        return None, str(location)
    return filesystem(str(location))


def _run_name(experiment: str) -> str:
    return str(experiment).rstrip("/").rsplit("/", 1)[-1]


@contextmanager
def trial_data(data: dict[str, Any]) -> Iterator[Any]:
    """The trial data put in the object store for the fits made inside the ``with`` block, and
    freed from it when the block ends, however it ends.

    Give the reference it yields to :func:`tuner` or :func:`restore` in place of ``data``. Each
    trial maps the one copy. Without this, Tune's ``with_parameters`` keeps the data in the
    store for the life of the driver, for two reasons:

    - its parameter registry stays in Ray's post-init hooks;
    - Tune pickles the trainable, with the reference inside, for its trial actors. Ray pins
      every reference pickled outside a task's arguments, "forever in the lifetime of the
      worker process" (``ray/_private/serialization.py``).

    A search of several tasks would then keep each finished task's data beside the current
    one's. On leaving the block, the fits are over and no trial can read the data again, so
    the registry's hook is dropped and the pins are removed: every local reference to the
    object beyond this function's own handle (all Python handles to it are that one object, and
    the count does not fall when the Tuner is deleted). The object is freed once the last handle
    goes: the ``as`` name and the Tuner's.
    """
    import ray

    ref = ray.put(data)
    try:
        yield ref
    finally:
        unpin(ref)


def _trainable(cfg: SearchConfig, data: dict[str, Any], groups: dict[str, Any] | None) -> Any:
    # Tune warns when keeping only the best checkpoints forces frequent experiment snapshots; on
    # small trials that is every few seconds and harmless, so the warning is only noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from genre_ray.training.loop import trial_spec
    from genre_ray.training.trainable import train_trial

    res = cfg.resources
    # ``data`` may be an ObjectRef (from trial_data): with_parameters then keeps it as it is.
    return tune.with_resources(tune.with_parameters(train_trial, data=data, spec=trial_spec(cfg, groups)),
                               {"cpu": res.cpu, "gpu": res.gpu})


class StudyJournalError(ValueError):
    """A study journal that cannot be used; the message names the file and what to do."""


def study_storage(path: str | Path) -> Any:
    """An Optuna journal storage in ``path`` (created if absent), checked to be readable.

    Raises:
        StudyJournalError: when the file exists but is not an Optuna journal (it is left as it is).
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        _check_journal_lines(path)
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, optuna.exceptions.OptunaError) as exc:
        raise StudyJournalError(f"{path}: not an Optuna study journal ({str(exc).splitlines()[0][:120]}); move it "
                                "away or delete it, and run again") from None
    return storage


def _check_journal_lines(path: Path) -> None:
    """Every complete line of an Optuna journal is a JSON operation (``op_code``); only a last line
    without its newline (a write cut short by a kill) may be partial, and Optuna skips that one."""
    import json

    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyJournalError(f"{path}: cannot read the Optuna study journal ({exc}); move it away or "
                                "delete it, and run again") from None
    for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline may be cut short
        try:
            ok = "op_code" in json.loads(line)
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise StudyJournalError(f"{path}: not an Optuna study journal (line {number} is no journal "
                                    "operation); move it away or delete it, and run again")


def check_study(storage: Any, study_name: str, cfg: SearchConfig) -> None:
    """Refuse a journal whose study of this name was made from another search space.

    Raises:
        StudyJournalError: when a parameter of the study has another distribution than this space
            gives it, or a parameter this space does not have.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return  # no such study yet: it will be created
    known: dict[str, Any] = {}
    for draw in space_draws(cfg):
        known.update(draw)
    for t in study.trials:
        for name, dist in t.distributions.items():
            if name not in known or known[name] != dist:
                raise StudyJournalError(
                    f"study {study_name!r} in its journal was made from another search space: parameter {name} "
                    f"is {dist} there and {known.get(name, 'absent')} here; start a new search (without --resume) "
                    "or move the journal away")


def space_draws(cfg: SearchConfig, draws: int = 64) -> list[dict[str, Any]]:
    """The parameters (name -> Optuna distribution) of ``draws`` random trials of the search space,
    in the order the space suggests them; a few dozen draws cover every branch of a conditional space."""
    import optuna

    from genre_ray.config.spaces import define_by_run

    space = define_by_run(cfg)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    out = []
    for _ in range(draws):
        trial = probe.ask()
        space(trial)
        out.append(dict(trial.distributions))
    return out


def startup_trials(num_samples: int, given: int | None = None) -> int:
    """Random trials before the sampler models the results: ``given``, else a fifth of the budget,
    at least 3 (Optuna's own default of 10 leaves a 12-trial search 2 guided trials)."""
    return int(given) if given is not None else max(3, num_samples // 5)


def tpe_sampler(seed: int, n_startup_trials: int = 10) -> Any:
    """Optuna's TPE for a conditional, parallel search.

    ``multivariate`` and ``group`` model parameters jointly within each branch of the zoo's
    define-by-run space (a model's own parameters appear only with that model), and
    ``constant_liar`` keeps concurrent trials from being suggested the same point.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():  # these options are marked experimental; they are stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=n_startup_trials)


def make_sampler(search: Search) -> Any:
    """The Optuna sampler ``search.sampler`` names, seeded, with its start-up trials set from the budget.

    ``tpe`` (default), ``random``, ``cmaes`` (continuous parameters; Optuna samples the others at
    random) or ``gp`` (a Gaussian process; best for a few continuous parameters and small budgets).
    """
    import warnings

    import optuna

    seed, name = search.seed, search.sampler
    startup = startup_trials(search.num_samples, search.startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return tpe_sampler(seed, startup)


def leaderboard(results: Any, cfg: SearchConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    metric, planned = cfg.search.metric, cfg.search.max_epochs
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
