"""What Ray Tune and MLflow cost per trial, trial throughput, and the memory trials share.

One fixed trial (the search space's model on its features, every hyperparameter fixed) runs:

bare         train.run_trial in this process, without Tune (the trainable's own code, reporting
             nowhere and writing no checkpoint)
tune         tuning.tuner: a fit of 2 such trials, one after the other, no ASHA, no tracking
tune+mlflow  the same with the MLflow child-run callback (a Tracker on a SQLite store)

They alternate, R rounds of: bare, tune, bare, tune+mlflow (after an untimed warm-up run, and
with one more bare run at the end). Each Tune fit is a pair with the bare runs just before and
just after it, minutes apart at most, so a slow spell of the shared machine weighs on both sides
of the pair. A trial's time in Tune is the interval between the driver receiving the two
trials' last epochs (the first trial's end, the second one's start on the reused actor, its
training, its per-epoch reports and checkpoints); Tune's own time_total_s splits it into inside
the trainable (training, reports, checkpoints) and outside (scheduling, the actor's reuse, the
driver's callbacks). The time until the first trial's end less that trial's own time is Tune's
start-up (the Tuner, the searcher, the data put in the object store, the trial actor and its
imports); the time after the last trial, its teardown; both are reported apart. A pair's
overhead = (Tune's time per trial - the mean of its two bare runs) / that mean; the verdict
uses the median over a method's pairs, and the ratio of the medians is shown beside it.

Throughput: N trials with one trial at a time on all the CPUs, and with two at a time on half
of them each; "steady" counts the trials completed after the first round, over the time they
took. Memory, sampled every second during those fits: the object store's bytes in use (Ray's
cluster minus available ``object_store_memory``) against the trial data's bytes, and each
trial process's peak RSS (VmHWM, with genre_ray.bench.memory's sampler) and its shared part
(RssShmem: object-store pages mapped by the trial, not copies).
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import os
import statistics
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genre_ray.bench import command_line, load_average, machine_summary, markdown_table, write_report
from genre_ray.cli import data_overrides

__all__ = ["Pair", "TuneRun", "dataset_bytes", "fixed_config", "object_store_used", "overhead",
           "run_overhead_bench"]

log = logging.getLogger("genre_ray.bench")

CONFIG_OVERRIDES = True  # takes --set KEY=VALUE (genre_ray.bench.__main__)

HELP = "per-trial overhead of Tune and MLflow against the bare training loop; throughput; shared memory"
DEFAULT_SPACE = "search_spaces/cnn.yaml"
TARGET = 0.10
MB = 2**20
#: The fixed trial: a mid-sized cnn2d of the cnn.yaml space, no early stopping of any kind.
FIXED: dict[str, Any] = {
    "model.params.depth": 3, "model.params.width": 12, "model.params.dropout": 0.2,
    "model.params.batch_norm": True, "train.optimizer": "adam", "train.lr": 1e-3, "train.weight_decay": 1e-5,
    "train.batch_size": 32, "train.patience": 0, "search.time_budget_s": None,
}
QUICK: dict[str, Any] = {
    "data.demo.genres": 3, "data.demo.songs_per_genre": 5, "data.demo.seconds": 4.0,
    "features.max_clips_per_song": 3, "features.clip_seconds": 1.0, "features.n_mels": 32,
    "model.params.depth": 2, "model.params.width": 4,
}


# ---------------------------------------------------------------- measurements (pure)

@dataclass
class TuneRun:
    """One Tune fit: when each trial's last epoch reached the driver (s after the fit began), and
    each trial's own time inside the trainable (Tune's ``time_total_s``), by trial id."""

    name: str
    concurrent: int
    cpu: float
    done: dict[str, float]
    wall_s: float
    in_trial: dict[str, float]
    errors: int = 0
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def trials(self) -> int:
        return len(self.done)

    @property
    def steady(self) -> list[str]:
        """The trials after the first round (whose actors were already up), by completion."""
        return sorted(self.done, key=self.done.__getitem__)[self.concurrent:]

    @property
    def trial_s(self) -> float:
        """Time per trial one at a time: from the first trial's completion to the last's, per trial.

        The mean of the gaps, not their median: the driver may take two trials' results in one
        go, which leaves one gap short and the next long.
        """
        times = sorted(self.done.values())
        return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")

    @property
    def in_trial_s(self) -> float:
        """Mean time inside the trainable of the steady trials (with :attr:`trial_s`, a mean too,
        the difference is the time per trial outside the trainable)."""
        values = [self.in_trial[t] for t in self.steady if t in self.in_trial]
        return statistics.fmean(values) if values else float("nan")

    @property
    def startup_s(self) -> float:
        """Until the first trial's end, less that trial's own time inside the trainable: the Tuner,
        the searcher, putting the data, and the trial actor starting and importing torch."""
        if not self.done:
            return float("nan")
        first = min(self.done, key=self.done.__getitem__)
        return self.done[first] - self.in_trial.get(first, self.trial_s)

    @property
    def teardown_s(self) -> float:
        return self.wall_s - max(self.done.values()) if self.done else float("nan")

    @property
    def per_min(self) -> float:
        return 60 * self.trials / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def steady_per_min(self) -> float:
        """Trials completed after the first round, per minute of the time they took."""
        ordered = sorted(self.done.values())
        if len(ordered) <= self.concurrent:
            return float("nan")
        span = ordered[-1] - ordered[self.concurrent - 1]
        return 60 * (len(ordered) - self.concurrent) / span if span > 0 else float("nan")


KEYS = ("tune", "mlflow")
LABELS = {"tune": "Tune, no tracking", "mlflow": "Tune + MLflow child runs"}
CSV_NAMES = {"tune": "tune", "mlflow": "tune+mlflow"}


@dataclass
class Pair:
    """One Tune fit (``key``: tune or mlflow) and the bare runs just before and just after it."""

    key: str
    run: TuneRun
    before: float
    after: float
    load: float = float("nan")

    @property
    def bare_s(self) -> float:
        return (self.before + self.after) / 2

    @property
    def overhead(self) -> float:
        """(Tune's time per trial - the mean of the two bare runs) / that mean."""
        return (self.run.trial_s - self.bare_s) / self.bare_s


def pairs_of(res: dict[str, Any], key: str) -> list[Pair]:
    return [p for p in res["pairs"] if p.key == key]


def dataset_bytes(data: dict[str, Any]) -> int:
    """Bytes of every array of the trial data (feature kind -> TrialData or a list of folds)."""
    total = 0
    for value in data.values():
        for fold in value if isinstance(value, list) else [value]:
            total += sum(getattr(v, "nbytes", 0) for v in vars(fold).values())
    return total


def fixed_config(cfg: Any) -> dict[str, Any]:
    """The one trial config of a space without searchable values (what OptunaSearch gives every trial).

    Raises:
        ValueError: when something in the space is still searched.
    """
    import optuna

    from genre_ray.config.spaces import define_by_run

    try:
        return define_by_run(cfg)(optuna.trial.FixedTrial({}))
    except ValueError as exc:
        raise ValueError(f"{cfg.source_file}: the overhead benchmark needs every value fixed "
                         f"({exc})") from None


# ---------------------------------------------------------------- runs (Ray)

def object_store_used() -> int:
    """Bytes in Ray's object store now: the cluster's ``object_store_memory`` less what is available."""
    import ray

    return int(ray.cluster_resources().get("object_store_memory", 0)
               - ray.available_resources().get("object_store_memory", 0))


def _proc(pid: int) -> tuple[str, int]:
    """A process's title (``ray::ImplicitFunc.train`` for a Tune trial) and its RssShmem in bytes."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        shmem = next((int(line.split()[1]) * 1024 for line in lines if line.startswith("RssShmem:")), 0)
        return title, shmem
    except (OSError, ValueError, IndexError):
        return "", 0


class _Watch:
    """Every second while the ``with`` block runs: the object store's bytes, the trial processes
    (Tune's function-trainable actors) and their shared RSS; peak RSS per process comes from
    :class:`genre_ray.bench.memory.PeakSampler` around it."""

    def __init__(self, interval_s: float = 1.0) -> None:
        from genre_ray.bench.memory import PeakSampler

        self.interval_s, self.peak = interval_s, PeakSampler(interval_s=interval_s)
        self.store_before = self.store_peak = 0
        self.trials: dict[int, int] = {}  # pid -> largest RssShmem seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="overhead-watch", daemon=True)

    def _poll(self) -> None:
        from genre_ray.bench.memory import ray_worker_pids

        self.store_peak = max(self.store_peak, object_store_used())
        for pid in ray_worker_pids():
            title, shmem = _proc(pid)
            if "ImplicitFunc" in title:
                self.trials[pid] = max(self.trials.get(pid, 0), shmem)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def __enter__(self) -> _Watch:
        gc.collect()  # objects of earlier fits that only wait for a collection are not counted
        self.store_before = object_store_used()
        self.peak.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak.__exit__(*exc)

    def summary(self, data_bytes: int) -> dict[str, Any]:
        rss = [self.peak.peaks.get(pid, 0) for pid in self.trials]
        return {"dataset_mb": data_bytes / MB, "store_before_mb": self.store_before / MB,
                "store_peak_mb": self.store_peak / MB,
                "store_growth_mb": (self.store_peak - self.store_before) / MB,
                "processes": len(self.trials), "rss_peak_mb": max(rss, default=0) / MB,
                "rss_shared_mb": max(self.trials.values(), default=0) / MB}


def _variant(cfg: Any, changes: dict[str, Any]) -> Any:
    """``cfg`` with dotted keys changed, validated again."""
    from genre_ray.config import parse_config

    raw = copy.deepcopy(cfg.raw)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_config(raw, cfg.source_file)


def _tune(cfg: Any, data: dict[str, Any], groups: dict[str, Any], storage: Path, name: str, trials: int,
          concurrent: int, cpu: float, tracker: Any = None, watch: bool = False) -> TuneRun:
    """One fit of ``trials`` copies of the fixed trial, ``concurrent`` at a time with ``cpu`` each."""
    from genre_ray.bench.search import BudgetCounter, budget_stopper
    from genre_ray.search.tuning import trial_data, tuner

    cfg = _variant(cfg, {"search.num_samples": trials, "search.max_concurrent": concurrent,
                         "resources.cpu": cpu})
    epochs = cfg.search.max_epochs
    with _Watch() if watch else nullcontext() as watcher:
        counter = BudgetCounter(cfg.search.metric)  # when each epoch reached the driver, s from now
        t0 = time.monotonic()
        with trial_data(data) as ref:
            grid = tuner(cfg, ref, tracker, storage, name, groups, early_stopping=False,
                         stop=budget_stopper(counter)).fit()
        wall = time.monotonic() - t0
    done = {r.trial_id: r.t for r in counter.reports if r.epoch == epochs}
    in_trial = {str(r.metrics["trial_id"]): float(r.metrics.get("time_total_s", float("nan")))
                for r in grid if r.metrics and "trial_id" in r.metrics}
    errors = [str(r.error) for r in grid if r.error]
    if errors:
        log.warning("%s: %d of %d trials failed, first: %s", name, len(errors), trials, errors[0])
    run = TuneRun(name, concurrent, cpu, done, wall, in_trial, len(errors))
    if watcher is not None:
        run.memory = watcher.summary(dataset_bytes(data))
    log.info("%s: %d trials in %.1f s, %.2f s per trial (steady)", name, run.trials, wall, run.trial_s)
    return run


def _bare(config: dict[str, Any], data: dict[str, Any], spec: dict[str, Any], runs: int) -> list[float]:
    """Seconds of ``runs`` bare trials (build, train, validate every epoch), each in this process."""
    from genre_ray.training.loop import BareReporter, run_trial

    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_trial(config, data, spec, BareReporter())
        out.append(time.perf_counter() - t0)
    log.info("bare: %s s", ", ".join(f"{s:.2f}" for s in out))
    return out


def calibrate(config: dict[str, Any], data: dict[str, Any], spec: dict[str, Any], seconds: float) -> int:
    """Epochs for a bare trial of about ``seconds``, from the second epoch of a 2-epoch run."""
    from genre_ray.training.loop import BareReporter, run_trial

    reporter = BareReporter()
    run_trial({**config, "train.epochs": 2}, data, {**spec, "max_epochs": 2}, reporter)
    epoch_s = reporter.times[1] - reporter.times[0]
    return max(1, min(500, round(seconds / epoch_s)))


def run_overhead_bench(cfg: Any, epochs: int | None, trial_seconds: float, repeats: int,
                       throughput_trials: int, work: Path) -> dict[str, Any]:
    """Every measurement of the benchmark (see the module's docstring).

    Args:
        cfg: the validated space, every value fixed.
        epochs: epochs per trial, or None to calibrate them to ``trial_seconds`` of bare training.
        repeats: rounds of bare, tune, bare, tune+mlflow (each fit of 2 trials is one pair).
        throughput_trials: trials of each throughput fit.
        work: a scratch folder for Tune's storage and the MLflow store.
    """
    import ray

    from genre_ray.search.runner import prepare
    from genre_ray.tracking import Tracker
    from genre_ray.training.loop import trial_spec

    prepared = prepare(cfg)
    data, groups = prepared["trial"], prepared["groups"]
    spec = trial_spec(cfg, groups)
    # Always run: the first trial in a process pays for lazy imports and first calls, not timed.
    calibrated = calibrate(fixed_config(cfg), data, spec, trial_seconds)
    if epochs is None:
        epochs = calibrated
        log.info("calibrated: %d epochs make a bare trial of about %.0f s", epochs, trial_seconds)
    cfg = _variant(cfg, {"train.epochs": epochs, "search.max_epochs": epochs, "search.grace_period": 1})
    config, spec = fixed_config(cfg), trial_spec(cfg, groups)
    cores = int(ray.cluster_resources().get("CPU", 1))
    out: dict[str, Any] = {"cfg": cfg, "epochs": epochs, "data": data, "cores": cores, "loads": {},
                           "clips": {k: (len(v.x_train), len(v.x_val)) for k, v in data.items()
                                     if not isinstance(v, list)}}
    # Rounds of bare, tune, bare, tune+mlflow, and a last bare run: each fit is paired with the
    # bare runs on either side of it.
    out["loads"]["start"] = load_average()
    bare = _bare(config, data, spec, 1)
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", "bench-overhead", artifact_root=work / "mlartifacts")
    tracker.start_parent("overhead", {"epochs": epochs}, {"genre_ray.kind": "benchmark"})
    out["pairs"] = []
    for r in range(repeats):
        for key in KEYS:
            load = load_average()
            run = _tune(cfg, data, groups, work / "ray", f"{key}-{r}", 2, 1, spec["cpu"],
                        tracker if key == "mlflow" else None)
            bare += _bare(config, data, spec, 1)
            out["pairs"].append(Pair(key, run, bare[-2], bare[-1], load))
            log.info("%s, round %d: %.2f s per trial against %.2f s bare: %+.1f %%", key, r + 1, run.trial_s,
                     out["pairs"][-1].bare_s, 100 * out["pairs"][-1].overhead)
    tracker.finish_parent({}, {}, [])
    out["bare"] = bare
    out["loads"]["throughput"] = load_average()
    out["throughput"] = [_tune(cfg, data, groups, work / "ray", f"c{c}", throughput_trials, c,
                               max(1, cores // c), watch=True) for c in (1, 2)]
    out["loads"]["end"] = load_average()
    return out


# ---------------------------------------------------------------- report

def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def overhead(res: dict[str, Any], key: str) -> float:
    """The median over ``key``'s pairs of (Tune's time per trial - its bare runs) / its bare runs."""
    return statistics.median(p.overhead for p in pairs_of(res, key))


def _median(values: Any) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def overhead_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The main table: bare, Tune and Tune + MLflow per trial."""
    rows = [{"method": "bare (run_trial in-process)", "trial_s": statistics.median(res["bare"]),
             "runs": ", ".join(f"{s:.2f}" for s in res["bare"])}]
    for key in KEYS:
        pairs = pairs_of(res, key)
        over = overhead(res, key)
        trial_s, near = _median(p.run.trial_s for p in pairs), _median(p.bare_s for p in pairs)
        rows.append({"method": LABELS[key], "trial_s": trial_s,
                     "in_trial_s": _median(p.run.in_trial_s for p in pairs),
                     "outside_s": _median(p.run.trial_s - p.run.in_trial_s for p in pairs),
                     "runs": ", ".join(f"{p.run.trial_s:.2f}" for p in pairs), "near": near,
                     "pairs": ", ".join(_pct(p.overhead) for p in pairs), "overhead": _pct(over),
                     "medians": _pct((trial_s - near) / near),
                     "met": "yes" if over <= TARGET else "**no**", "_over": over})
    return rows


def _pair_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"round": i // len(KEYS) + 1, "method": LABELS[p.key], "load": p.load, "before": p.before,
             "trial_s": p.run.trial_s, "after": p.after, "overhead": _pct(p.overhead)}
            for i, p in enumerate(res["pairs"])]


def _startup_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key in KEYS:
        runs = [p.run for p in pairs_of(res, key)]
        rows.append({"method": LABELS[key], "fits": len(runs), "wall": _median(r.wall_s for r in runs),
                     "trials": runs[0].trials if runs else 0,
                     "first": _median(min(r.done.values(), default=float("nan")) for r in runs),
                     "startup": _median(r.startup_s for r in runs),
                     "startups": ", ".join(f"{r.startup_s:.2f}" for r in runs),
                     "teardown": _median(r.teardown_s for r in runs)})
    return rows


def _paired_throughput(res: dict[str, Any]) -> dict[str, Any]:
    """The Tune overhead fits together as one-at-a-time throughput on one CPU."""
    runs = [p.run for p in pairs_of(res, "tune")]
    trials, wall = sum(r.trials for r in runs), sum(r.wall_s for r in runs)
    step = _median(r.trial_s for r in runs)
    return {"concurrent": 1, "cpu": f"{runs[0].cpu:g}", "trials": trials, "wall": wall,
            "per_min": 60 * trials / wall if wall > 0 else float("nan"), "steady": 60 / step,
            "in_trial": _median(r.in_trial_s for r in runs),
            "from": f"the {len(runs)} Tune overhead fits (steady: their median time per trial)"}


def _throughput_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [_paired_throughput(res), *(
        {"concurrent": r.concurrent, "cpu": f"{r.cpu:g}", "trials": r.trials, "wall": r.wall_s,
         "per_min": r.per_min, "steady": r.steady_per_min, "in_trial": r.in_trial_s, "from": "its own fit"}
        for r in res["throughput"])]


def _memory_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"concurrent": r.concurrent, **r.memory} for r in res["throughput"]]


def csv_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured setting, every section's figures in the same columns; a row per pair."""
    keys = ("section", "method", "concurrent", "cpu_per_trial", "trials", "median_trial_s", "bare_near_s",
            "overhead_pct", "startup_s", "fit_wall_s", "trials_per_min", "steady_trials_per_min",
            "dataset_mb", "store_before_mb", "store_peak_mb", "rss_peak_mb", "load_1min")
    cpu = res["cfg"].resources.cpu
    rows = [{"section": "overhead", "method": "bare", "concurrent": 1, "cpu_per_trial": cpu,
             "trials": len(res["bare"]), "median_trial_s": round(statistics.median(res["bare"]), 3),
             "load_1min": round(res["loads"]["start"], 2)}]
    for key in KEYS:
        pairs = pairs_of(res, key)
        runs = [p.run for p in pairs]
        rows.append({"section": "overhead", "method": CSV_NAMES[key], "concurrent": 1, "cpu_per_trial": cpu,
                     "trials": sum(r.trials for r in runs),
                     "median_trial_s": round(_median(r.trial_s for r in runs), 3),
                     "bare_near_s": round(_median(p.bare_s for p in pairs), 3),
                     "overhead_pct": round(100 * overhead(res, key), 2),
                     "startup_s": round(_median(r.startup_s for r in runs), 2),
                     "fit_wall_s": round(sum(r.wall_s for r in runs), 2),
                     "load_1min": round(_median(p.load for p in pairs), 2)})
    for i, p in enumerate(res["pairs"]):
        rows.append({"section": "pair", "method": f"{CSV_NAMES[p.key]} round {i // len(KEYS) + 1}",
                     "concurrent": 1, "cpu_per_trial": p.run.cpu, "trials": p.run.trials,
                     "median_trial_s": round(p.run.trial_s, 3), "bare_near_s": round(p.bare_s, 3),
                     "overhead_pct": round(100 * p.overhead, 2), "startup_s": round(p.run.startup_s, 2),
                     "fit_wall_s": round(p.run.wall_s, 2), "load_1min": round(p.load, 2)})
    for run in res["throughput"]:
        rows.append({"section": "throughput", "method": f"throughput_c{run.concurrent}",
                     "concurrent": run.concurrent, "cpu_per_trial": run.cpu, "trials": run.trials,
                     "fit_wall_s": round(run.wall_s, 2), "trials_per_min": round(run.per_min, 3),
                     "steady_trials_per_min": round(run.steady_per_min, 3),
                     **{k: round(run.memory[k], 2)
                        for k in ("dataset_mb", "store_before_mb", "store_peak_mb", "rss_peak_mb")
                        if k in run.memory},
                     "load_1min": round(res["loads"]["throughput"], 2)})
    return [{k: r.get(k, "") for k in keys} for r in rows]


COLUMNS = {
    "overhead": {"method": "method", "trial_s": "s per trial (median)", "in_trial_s": "inside the trainable, "
                 "s (Tune's time_total_s)", "outside_s": "outside it, s", "runs": "each fit's s per trial",
                 "near": "bare runs around them, s (median)", "pairs": "each pair's overhead",
                 "overhead": "overhead: median of the pairs", "medians": "ratio of the medians",
                 "met": f"<= {TARGET:.0%}"},
    "pairs": {"round": "round", "method": "method", "load": "load (1 min) at its start",
              "before": "bare run before, s", "trial_s": "Tune s per trial", "after": "bare run after, s",
              "overhead": "overhead"},
    "startup": {"method": "method", "fits": "fits", "trials": "trials per fit", "wall": "fit wall s (median)",
                "first": "first trial done at, s (median)",
                "startup": "start-up s (first done - its own time; median)",
                "startups": "each fit's start-up, s",
                "teardown": "after the last trial, s (median)"},
    "throughput": {"concurrent": "trials at once", "cpu": "CPU per trial", "trials": "trials",
                   "wall": "fit wall s", "per_min": "trials/min (whole fit)", "steady": "trials/min (steady)",
                   "in_trial": "s per trial inside the trainable (mean, after the first round)",
                   "from": "measured in"},
    "memory": {"concurrent": "trials at once", "dataset_mb": "trial data, MB",
               "store_before_mb": "object store before, MB", "store_peak_mb": "object store peak, MB",
               "store_growth_mb": "peak - before, MB", "processes": "trial processes",
               "rss_peak_mb": "peak RSS per trial process, MB",
               "rss_shared_mb": "of which shared (RssShmem), MB"},
}


def _header(res: dict[str, Any], command: str, wall_s: float, ray_init_s: float,
            quick: bool) -> dict[str, str]:
    from genre_ray.config.spaces import resolve

    cfg = res["cfg"]
    plan = resolve(fixed_config(cfg))
    shown = {**plan.params, **{k: plan.train[k] for k in ("optimizer", "lr", "weight_decay", "batch_size")}}
    clips = ", ".join(f"{k}: {tr} train / {va} validation clips" for k, (tr, va) in res["clips"].items())
    how = "quick mode" if quick else "epochs calibrated to the trial length asked, or given"
    return {**machine_summary(("ray", "torch", "mlflow", "optuna")), "command": f"`{command}`",
            "trial": f"{plan.model} on {plan.kind} ({', '.join(f'{k}={v}' for k, v in shown.items())}), "
            f"{res['epochs']} epochs, {cfg.resources.cpu:g} CPU, validation every epoch ({how})",
            "data": f"{cfg.data.source} {cfg.data.path or ''} ({clips}; "
            f"{dataset_bytes(res['data']) / MB:.1f} MB of trial data)",
            "load average (1 min) at the start of each phase": ", ".join(
                f"{k} {v:.2f}" for k, v in res["loads"].items()) + f" on {os.cpu_count()} cores shared "
            "with other processes",
            "wall time": f"{wall_s:.0f} s in all; Ray's own start (ray.init, {ray_init_s:.1f} s) not counted"}


def _release_note(res: dict[str, Any]) -> str:
    """Whether the store before each memory fit was free of the earlier fits' copies."""
    rows = _memory_rows(res)
    kept = [r for r in rows if r.get("store_before_mb", 0) >= 0.5 * r.get("dataset_mb", 0) > 0]
    if not kept:
        return ("`trial_data` frees it when its fit ends: the store before each of these fits holds no "
                "copy of the earlier fits'.")
    held = ", ".join(f"{r['store_before_mb']:.1f} MB" for r in kept)
    return (f"**The store before {len(kept)} of these fits still held earlier fits' data** ({held}): "
            "`trial_data` did not free it.")


def report(res: dict[str, Any], out: Path, command: str, wall_s: float, ray_init_s: float,
           quick: bool) -> tuple[Path, Path]:
    """Write the Markdown report and its CSV."""
    rows = overhead_rows(res)
    worst = max(r["_over"] for r in rows[1:])
    verdict = "met" if worst <= TARGET else "**not met**"
    spread = (max(res["bare"]) - min(res["bare"])) / rows[0]["trial_s"]
    pair_range = ", ".join(f"{r['method']} {_pct(min(p.overhead for p in pairs_of(res, k)))} to "
                           f"{_pct(max(p.overhead for p in pairs_of(res, k)))}"
                           for r, k in zip(rows[1:], KEYS, strict=True))
    sections = [
        ("Per-trial overhead", f"Target: what Tune and MLflow add to a trial of about 30 s is at most "
         f"{TARGET:.0%} of the bare trial. Here a bare trial takes {rows[0]['trial_s']:.1f} s and the "
         f"larger of the two medians of the pairs is {_pct(worst)}: {verdict}. The pairs range over "
         f"{pair_range}, and the bare runs alone spread over {spread:.0%} of their median on this shared "
         "machine: a difference smaller than that is noise. The time outside the trainable is the part of "
         "Tune's cost that does not depend on the trial's speed.\n\n"
         + markdown_table(rows, COLUMNS["overhead"])),
        ("Pairs", "Each Tune fit with the bare runs just before and just after it, in the order they ran.\n\n"
         + markdown_table(_pair_rows(res), COLUMNS["pairs"])),
        ("Start-up, apart", markdown_table(_startup_rows(res), COLUMNS["startup"])),
        ("Throughput", f"On {res['cores']} Ray CPUs.\n\n"
         + markdown_table(_throughput_rows(res), COLUMNS["throughput"])),
        ("Memory", markdown_table(_memory_rows(res), COLUMNS["memory"]) + "\n\nThe trial data is put in the "
         "object store once per fit (`tuning.trial_data`, given to `tune.with_parameters`) and every trial "
         "maps it without a copy: the store holds it once with one trial or two, and each trial's shared "
         "RSS is those mapped pages. " + _release_note(res)),
        ("Method", "```\n" + (__doc__ or "").strip() + "\n```\n\nTimings are for comparison within this "
         "run: other processes share the machine (see the load averages above)."),
    ]
    header = _header(res, command, wall_s, ray_init_s, quick)
    return write_report(out, "Overhead of Tune and MLflow per trial", header, sections, csv_rows(res))


# ---------------------------------------------------------------- command line

#: The options of ``python -m genre_ray.bench overhead``: flag -> argparse keywords.
OPTIONS: dict[str, dict[str, Any]] = {
    "--space": {"default": DEFAULT_SPACE, "metavar": "YAML", "help": "the search space whose model and "
                f"features the fixed trial uses (default: {DEFAULT_SPACE})"},
    "--data": {"metavar": "DIR", "help": "a folder-per-genre collection instead of the demo collection"},
    "--trial-seconds": {"type": float, "default": 30.0, "metavar": "S", "help": "calibrate the epochs so "
                        "that a bare trial takes about S seconds (default: 30)"},
    "--epochs": {"type": int, "metavar": "N", "help": "epochs per trial (instead of calibrating)"},
    "--repeats": {"type": int, "default": 4, "metavar": "R", "help": "rounds of a bare run, a Tune fit, "
                  "a bare run and a Tune + MLflow fit, each fit paired with the bare runs around it "
                  "(default: 4)"},
    "--throughput-trials": {"type": int, "default": 6, "metavar": "N", "help": "trials of each throughput "
                            "fit (default: 6)"},
    "--results-dir": {"default": "results", "metavar": "DIR", "help": "where bench_overhead.md and .csv go, "
                      "and the feature cache (default: results)"},
    "--quick": {"action": "store_true", "help": "a run of about a minute for tests: a tiny demo (or the "
                "given data), 2 epochs, 1 round, 3 throughput trials"},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m genre_ray.bench overhead`` (:data:`OPTIONS`)."""
    for flag, kwargs in OPTIONS.items():
        p.add_argument(flag, **kwargs)


def overrides_for(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the options (validated by :func:`genre_ray.config.load_config`)."""
    results = Path(args.results_dir)
    out = {**FIXED, "output.results_dir": str(results), "search.max_concurrent": 1, "resources.gpu": 0}
    if args.quick:
        out.update({**QUICK, "data.path": str(results / "cache" / "bench_overhead_demo")})
    if args.data:
        out.update(data_overrides(args.data))
    return {**out, **getattr(args, "overrides", {})}  # --set last: it wins


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments, print the report, return the exit status."""
    import ray

    from genre_ray.config import ConfigError, load_config

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t0 = time.perf_counter()
    try:
        cfg = load_config(args.space, overrides_for(args))
        fixed_config(cfg)
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    epochs = 2 if args.quick and not args.epochs else args.epochs
    repeats, trials = (1, 3) if args.quick else (args.repeats, args.throughput_trials)
    for noisy in ("ray", "ray.data", "ray.tune", "genre_ray.search"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = not ray.is_initialized()  # a caller's Ray session (tests) is left running
    t_ray = time.perf_counter()
    if started:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray_init_s = time.perf_counter() - t_ray
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as work:
            res = run_overhead_bench(cfg, epochs, args.trial_seconds, repeats, trials, Path(work))
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    md, path_csv = report(res, Path(args.results_dir) / "bench_overhead.md",
                          command_line(getattr(args, "argv", None)), time.perf_counter() - t0, ray_init_s,
                          args.quick)
    print(md.read_text())
    print(f"wrote {md} and {path_csv}")
    return 0
