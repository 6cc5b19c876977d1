"""Search efficiency: ASHA + TPE against random search without early stopping, same budget.

random     Optuna's RandomSampler, no early stopping: N trials of max_epochs each. Its budget B
           is the trial-epochs it actually ran (N x max_epochs unless a trial stops itself).
asha_tpe   the search's default: Optuna TPE and ASHA, as many trials as it likes, stopped once
           the trial-epochs of all its trials together reach B (a trial cut mid-way counts the
           epochs it ran).

Both search the same space on the same trial data (one object-store copy), with the same
max_concurrent and training seed, once per seed; TPE's sampler seed is the seed plus 1000, so its
random start-up trials are not random search's own first draws. Every reported epoch of every
trial is recorded on the driver in the order Tune processes it; the curves plot the best
validation score so far against the cumulative trial-epochs. The target: ASHA + TPE reaches
random search's best validation score within 40% of random's trial-epochs.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genre_ray.bench import command_line, machine_summary, markdown_table, write_report
from genre_ray.cli import data_overrides

__all__ = ["BudgetCounter", "Curve", "Report", "RunResult", "best_so_far", "budget_stopper",
           "epochs_to_reach", "median_curve", "order_reports", "run_search_bench"]

log = logging.getLogger(__name__)

CONFIG_OVERRIDES = True  # takes --set KEY=VALUE (genre_ray.bench.__main__)

HELP = "compare ASHA + TPE with random search (no early stopping) on the same budget of trial-epochs"
DEFAULT_SPACE = "search_spaces/cnn.yaml"
TARGET_RATIO = 0.40
DEFAULT_RANDOM_TRIALS = 12  # the search spaces' own num_samples
DEMO_ROOT = "cache/bench_search_demo"  # under the results folder: never the searches' demo collection
#: A harder demo than the search's default, where random search does not reach the ceiling:
#: 10 overlapping styles, 6-s songs (3 clips each), 9 epochs with ASHA rungs at 1, 3 and 9.
DEFAULT_OVERRIDES: dict[str, Any] = {
    "data.demo.genres": 10, "data.demo.songs_per_genre": 24, "data.demo.seconds": 6.0,
    "train.epochs": 9, "search.max_epochs": 9, "search.grace_period": 1, "search.reduction_factor": 3,
    "search.max_concurrent": 2, "search.time_budget_s": None,
}
SMOKE_OVERRIDES: dict[str, Any] = {
    "data.demo.genres": 3, "data.demo.songs_per_genre": 5, "data.demo.seconds": 4.0,
    "features.max_clips_per_song": 3, "features.clip_seconds": 1.0, "features.n_mels": 32,
    "train.epochs": 2, "search.max_epochs": 2, "search.grace_period": 1, "search.reduction_factor": 2,
    # one trial at a time, as the search's own --smoke: Tune then reuses one trial process per method
    "search.max_concurrent": 1, "search.time_budget_s": None,
}
METHODS = {"random": "random search", "asha_tpe": "ASHA + TPE"}


# ---------------------------------------------------------------- curves (pure, no Ray)

@dataclass(frozen=True)
class Report:
    """One epoch of one trial as the driver received it."""

    trial_id: str
    epoch: int
    value: float
    t: float  # seconds since the run started, when the driver processed it


@dataclass
class Curve:
    """Best-so-far: ``x[i]`` cumulative trial-epochs, ``y[i]`` the best value up to it."""

    x: list[int]
    y: list[float]

    @property
    def final(self) -> float:
        return self.y[-1] if self.y else math.nan


def _better(a: float, b: float, mode: str) -> bool:
    """``a`` strictly better than ``b`` (NaN is never better; anything beats NaN)."""
    if math.isnan(a):
        return False
    return math.isnan(b) or (a > b if mode == "max" else a < b)


def order_reports(reports: Sequence[Report]) -> list[Report]:
    """Reports in the order they were received (stable for equal times)."""
    return sorted(reports, key=lambda r: r.t)


def best_so_far(reports: Sequence[Report], mode: str) -> Curve:
    """The best value after each trial-epoch, every report counting one epoch.

    Args:
        reports: every epoch of every trial of one run.
        mode: ``max`` or ``min``, the metric's direction.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    x, y, best = [], [], math.nan
    for i, r in enumerate(order_reports(reports), start=1):
        if _better(r.value, best, mode):
            best = r.value
        x.append(i)
        y.append(best)
    return Curve(x, y)


def epochs_to_reach(curve: Curve, target: float, mode: str, budget: int | None = None) -> int | None:
    """The cumulative trial-epochs at which ``curve`` first reaches ``target``, within ``budget``.

    Returns:
        The epochs, or None when it never does (or not within the budget).
    """
    for x, y in zip(curve.x, curve.y, strict=True):
        if budget is not None and x > budget:
            break
        if not math.isnan(y) and (y >= target if mode == "max" else y <= target):
            return x
    return None


def value_at(curve: Curve, x: int) -> float:
    """The best-so-far after ``x`` trial-epochs (NaN before the first and after the last)."""
    if not curve.x or x < 1 or x > curve.x[-1]:
        return math.nan
    return curve.y[min(x, len(curve.y)) - 1]


def median_curve(curves: Sequence[Curve], upto: int) -> Curve:
    """The median over runs at each of 1..``upto`` trial-epochs, over the runs that got that far."""
    x, y = [], []
    for i in range(1, upto + 1):
        values = [v for v in (value_at(c, i) for c in curves) if not math.isnan(v)]
        if values:
            x.append(i)
            y.append(float(statistics.median(values)))
    return Curve(x, y)


class BudgetCounter:
    """Counts every epoch that trials report, once each, and says when the budget is spent.

    A repeated (trial, epoch), such as the last result that Tune may hand on again when a trial
    ends, is not counted again.

    Args:
        metric: the validation metric to record.
        budget: trial-epochs after which the run should stop (None: never).
    """

    def __init__(self, metric: str, budget: int | None = None) -> None:
        self.metric, self.budget = metric, budget
        self.reports: list[Report] = []
        self.planned: dict[str, int] = {}
        self.cut: set[str] = set()  # trials that reported as the budget ran out, or after
        self._seen: set[tuple[str, int]] = set()
        self._t0 = time.monotonic()

    @property
    def used(self) -> int:
        return len(self.reports)

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.used >= self.budget

    def add(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Record one result; returns whether it was a new epoch."""
        epoch = result.get("training_iteration")
        if epoch is None or (trial_id, int(epoch)) in self._seen:
            return False
        if self.exhausted:  # already over: a concurrent trial's epoch in flight, counted all the same
            self.cut.add(trial_id)
        self._seen.add((trial_id, int(epoch)))
        value = result.get(self.metric)
        self.reports.append(Report(trial_id, int(epoch), float(value) if value is not None else math.nan,
                                   time.monotonic() - self._t0))
        if "planned_epochs" in result:
            self.planned[trial_id] = int(result["planned_epochs"])
        if self.exhausted:
            self.cut.add(trial_id)
        return True

    def epochs_of(self) -> dict[str, int]:
        """Epochs run per trial."""
        out: dict[str, int] = {}
        for r in self.reports:
            out[r.trial_id] = max(out.get(r.trial_id, 0), r.epoch)
        return out


def budget_stopper(counter: BudgetCounter) -> Any:
    """A Tune stopper that feeds ``counter`` every result and stops the run when it is spent."""
    from ray import tune

    class BudgetStopper(tune.Stopper):
        def __init__(self) -> None:
            self.counter = counter

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            self.counter.add(trial_id, result)
            return False  # stop_all ends every trial at once

        def stop_all(self) -> bool:
            return self.counter.exhausted

    return BudgetStopper()


# ---------------------------------------------------------------- runs (Ray)

@dataclass
class RunResult:
    """One search of one method and seed."""

    method: str
    seed: int
    reports: list[Report]
    planned: dict[str, int]
    ended_by_budget: set[str]  # trials running when the budget ran out (complete or not)
    wall_s: float
    mode: str
    curve: Curve = field(init=False)

    def __post_init__(self) -> None:
        self.curve = best_so_far(self.reports, self.mode)

    @property
    def trial_epochs(self) -> int:
        return len(self.reports)

    @property
    def trials(self) -> int:
        return len({r.trial_id for r in self.reports})

    def _short(self) -> dict[str, int]:
        """Trials that ran fewer epochs than planned -> their epochs."""
        epochs: dict[str, int] = {}
        for r in self.reports:
            epochs[r.trial_id] = max(epochs.get(r.trial_id, 0), r.epoch)
        return {t: e for t, e in epochs.items() if e < self.planned.get(t, e)}

    @property
    def cut(self) -> int:
        """Trials that the budget ended before their last epoch."""
        return sum(1 for t in self._short() if t in self.ended_by_budget)

    @property
    def stopped_early(self) -> int:
        """Trials that stopped before their last epoch otherwise: ASHA (or the trial's own patience)."""
        return sum(1 for t in self._short() if t not in self.ended_by_budget)


# TPE's sampler seed is the run's seed plus this: with one seed for both samplers, TPE's random start-up
# trials were random search's first trials, and a configuration both drew was credited to both.
TPE_SEED_OFFSET = 1000


def _run(cfg: Any, data: dict[str, Any], groups: dict[str, Any], method: str, seed: int, budget: int | None,
         storage: Path) -> RunResult:
    """One search; ``budget`` None runs random search's fixed trials to the end."""
    import optuna

    from genre_ray.search.tuning import startup_trials, tpe_sampler, trial_data, tuner

    counter = BudgetCounter(cfg.search.metric, budget)
    if method == "random":
        kwargs: dict[str, Any] = {"sampler": optuna.samplers.RandomSampler(seed=seed), "early_stopping": False}
    else:  # another stream of suggestions: its random start-up never replays random search's own draws
        kwargs = {"sampler": tpe_sampler(seed + TPE_SEED_OFFSET, startup_trials(cfg.search.num_samples,
                                                                                cfg.search.startup_trials)),
                  "early_stopping": True}
    t0 = time.perf_counter()
    with trial_data(data) as ref:
        grid = tuner(cfg, ref, None, storage, f"{method}-seed{seed}", groups, stop=budget_stopper(counter),
                     **kwargs).fit()
    wall = time.perf_counter() - t0
    errors = [r.error for r in grid if r.error]
    # A trial that stop_all ended keeps a last result not marked done (ASHA's stops and finished
    # trials are marked), which tells the budget's cuts from ASHA's stops.
    cut = counter.cut | {str(r.metrics.get("trial_id")) for r in grid
                         if r.metrics and not r.error and not r.metrics.get("done")}
    if errors:
        log.warning("%s seed %d: %d trials failed, first: %s", method, seed, len(errors), errors[0])
    log.info("%s seed %d: %d trials, %d trial-epochs, %.0f s", method, seed,
             len(counter.epochs_of()), counter.used, wall)
    return RunResult(method, seed, counter.reports, counter.planned, cut, wall, cfg.mode)


def run_search_bench(cfg: Any, seeds: Sequence[int], random_trials: int, storage: Path) -> list[RunResult]:
    """Both methods once per seed: random first (its trial-epochs are the budget), then ASHA + TPE.

    Args:
        cfg: the validated search space (its ``search.max_epochs`` is each random trial's length).
        seeds: searcher and training seeds; one pair of runs each.
        random_trials: random search's number of trials.
        storage: Tune's storage folder for the runs' trials.
    """
    from genre_ray.config import parse_config
    from genre_ray.search.runner import prepare
    from genre_ray.search.tuning import startup_trials

    prepared = prepare(cfg)
    data, groups = prepared["trial"], prepared["groups"]
    out = []
    for seed in seeds:
        raw = copy.deepcopy(cfg.raw)  # the YAML as loaded, overrides applied
        raw.setdefault("search", {}).update(seed=seed, num_samples=random_trials)
        raw.setdefault("train", {})["seed"] = seed
        random_cfg = parse_config(raw, cfg.source_file)
        random = _run(random_cfg, data, groups, "random", seed, None, storage)
        # Enough trials that the budget, not num_samples, ends the run: ASHA's least is one epoch each.
        # TPE's random start-up is what a search of random's trials would get (a fifth of 12: 3),
        # not a fifth of that inflated count.
        raw["search"]["startup_trials"] = startup_trials(random_trials, cfg.search.startup_trials)
        raw["search"]["num_samples"] = random.trial_epochs + 1
        asha = _run(parse_config(raw, cfg.source_file), data, groups, "asha_tpe", seed, random.trial_epochs,
                    storage)
        out += [random, asha]
    return out


# ---------------------------------------------------------------- report

def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.4f}"


def seed_rows(runs: Sequence[RunResult], target: float = TARGET_RATIO) -> list[dict[str, Any]]:
    """One row per seed: the budget, both bests, and when ASHA + TPE reached random's best."""
    by_seed: dict[int, dict[str, RunResult]] = {}
    for r in runs:
        by_seed.setdefault(r.seed, {})[r.method] = r
    rows = []
    for seed, pair in sorted(by_seed.items()):
        rnd, asha = pair["random"], pair["asha_tpe"]
        budget = rnd.trial_epochs
        reach = epochs_to_reach(asha.curve, rnd.curve.final, rnd.mode, budget)
        ratio = reach / budget if reach is not None and budget else math.inf
        rows.append({"seed": seed, "budget": budget, "random_best": _fmt(rnd.curve.final),
                     "random_own_best_at": epochs_to_reach(rnd.curve, rnd.curve.final, rnd.mode),
                     "asha_best": _fmt(asha.curve.final),
                     "random_at_target": _fmt(value_at(rnd.curve, int(target * budget))),
                     "asha_at_target": _fmt(value_at(asha.curve, int(target * budget))),
                     "epochs_to_reach": reach if reach is not None else "not reached",
                     "ratio": f"{ratio:.2f}" if math.isfinite(ratio) else "not reached",
                     "met": "yes" if ratio <= target else "no", "_ratio": ratio})
    return rows


def median_row(rows: Sequence[dict[str, Any]], target: float = TARGET_RATIO) -> dict[str, Any]:
    """The median ratio over seeds (a seed that never reached counts as infinitely many epochs)."""
    ratio = statistics.median([r["_ratio"] for r in rows]) if rows else math.inf
    met = sum(r["met"] == "yes" for r in rows)
    return {"seed": "median", "ratio": f"{ratio:.2f}" if math.isfinite(ratio) else "not reached",
            "met": ("yes" if ratio <= target else "no") + f" ({met} of {len(rows)} seeds)", "_ratio": ratio}


def run_rows(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per run (the CSV)."""
    seeds = {r["seed"]: r for r in seed_rows(runs)}
    rows = []
    for r in runs:
        s = seeds[r.seed]
        mine = r.method == "asha_tpe"
        rows.append({"seed": r.seed, "method": METHODS[r.method], "trials": r.trials,
                     "stopped_early": r.stopped_early, "cut_by_budget": r.cut,
                     "trial_epochs": r.trial_epochs, "budget": s["budget"], "best": _fmt(r.curve.final),
                     "wall_s": round(r.wall_s, 1),
                     "epochs_to_reach_random_best": s["epochs_to_reach"] if mine else "",
                     "ratio": s["ratio"] if mine else "", "target_met": s["met"] if mine else ""})
    return rows


def plot(runs: Sequence[RunResult], metric: str, path: Path, target: float = TARGET_RATIO) -> Path:
    """Best-so-far against cumulative trial-epochs: each seed thin, the median thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"random": "tab:gray", "asha_tpe": "tab:blue"}
    fig, ax = plt.subplots(figsize=(8, 5))
    budget = max(r.trial_epochs for r in runs if r.method == "random")
    for method, label in METHODS.items():
        mine = [r for r in runs if r.method == method]
        for r in mine:
            ax.step(r.curve.x, r.curve.y, where="post", color=colors[method], alpha=0.35, lw=0.8)
        med = median_curve([r.curve for r in mine], max(r.trial_epochs for r in mine))
        ax.step(med.x, med.y, where="post", color=colors[method], lw=2.2,
                label=f"{label} (median of {len(mine)})")
    best = statistics.median([r.curve.final for r in runs if r.method == "random"])
    ax.axhline(best, color="tab:red", ls="--", lw=1, label=f"random search's best (median) {best:.4f}")
    ax.axvline(target * budget, color="black", ls=":", lw=1, label=f"{target:.0%} of the budget")
    ax.set_xlabel("cumulative trial-epochs")
    ax.set_ylabel(f"best validation {metric} so far")
    ax.set_title("Search efficiency: ASHA + TPE vs random search, same budget")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def report(runs: Sequence[RunResult], cfg: Any, out: Path, command: str, wall_s: float,
           overrides: dict[str, Any]) -> tuple[Path, Path]:
    """Write the Markdown report and its CSV (one row per run)."""
    seeds = seed_rows(runs)
    s = cfg.search
    header = {**machine_summary(("ray", "optuna", "torch")), "command": f"`{command}`",
              "space": f"{cfg.source_file} ({', '.join(cfg.model_names)} on {', '.join(cfg.feature_kinds)})",
              "data": _describe_data(cfg),
              "overrides": ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none",
              "metric": f"{s.metric} ({cfg.mode}) on the validation songs",
              "search": f"max_epochs {s.max_epochs}, ASHA grace_period {s.grace_period}, "
              f"reduction_factor {s.reduction_factor:g}, max_concurrent {s.max_concurrent}, "
              f"{cfg.resources.cpu:g} CPU per trial; both methods share each seed's training seed, and TPE "
              f"samples with seed + {TPE_SEED_OFFSET}, so no configuration is credited to both for being "
              "drawn by the same random stream",
              "wall time": f"{wall_s:.0f} s in all (data and features included)"}
    columns = {"seed": "seed", "budget": "budget (random's trial-epochs)", "random_best": "random best",
               "random_own_best_at": "random reached its best at", "asha_best": "ASHA+TPE best",
               "random_at_target": f"random best at {TARGET_RATIO:.0%}",
               "asha_at_target": f"ASHA+TPE best at {TARGET_RATIO:.0%}", "epochs_to_reach":
               "ASHA+TPE epochs to random's best", "ratio": "ratio", "met": f"<= {TARGET_RATIO:.2f}"}
    run_columns = {"seed": "seed", "method": "method", "trials": "trials", "stopped_early": "stopped early",
                   "cut_by_budget": "cut by budget", "trial_epochs": "trial-epochs", "best": "best",
                   "wall_s": "wall s"}
    rows = run_rows(runs)
    sections = [
        ("Target", f"ASHA + TPE should reach random search's best {s.metric} within {TARGET_RATIO:.0%} of "
         "random's trial-epochs. Ratio = ASHA + TPE's epochs to reach it / the budget.\n\n"
         + markdown_table([*seeds, median_row(seeds)], columns)),
        ("Runs", markdown_table(rows, run_columns)),
        ("Plot", f"![best so far]({out.with_suffix('.png').name})"),
        ("Method", "```\n" + (__doc__ or "").strip() + "\n```\n\nWall times are for comparison only: other "
         "processes may share the machine; the budget is counted in trial-epochs."),
    ]
    return write_report(out, "Search efficiency: ASHA + TPE vs random search", header, sections, rows)


def _describe_data(cfg: Any) -> str:
    d = cfg.data
    if d.source == "demo":
        demo = d.demo
        return (f"demo collection, {demo.genres} genres x {demo.songs_per_genre} songs of "
                f"{demo.seconds:g} s (seed {demo.seed}) at {d.path}")
    return f"{d.source} {d.path}"


# ---------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m genre_ray.bench search``."""
    demo = ", ".join(f"{k}={v}" for k, v in DEFAULT_OVERRIDES.items() if k.startswith("data."))
    p.add_argument("--space", default=DEFAULT_SPACE, metavar="YAML",
                   help=f"the search space (default: {DEFAULT_SPACE}, on a harder demo: {demo})")
    p.add_argument("--data", metavar="PATH", help="a folder-per-genre collection, or a feature table (.csv, GTZAN "
                   "features layout), instead of the demo")
    p.add_argument("--folds", type=int, metavar="K", help="k-fold cross-validation over the non-test songs "
                   "(split.folds): every trial-epoch reports the mean over the folds")
    p.add_argument("--out", metavar="FILE", help="the report (default: RESULTS_DIR/bench_search.md; the .csv "
                   "and .png go beside it)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--random-trials", type=int, metavar="N", help="random search's trials "
                      f"(default: {DEFAULT_RANDOM_TRIALS})")
    size.add_argument("--budget", type=int, metavar="E", help="trial-epochs for each method: random search "
                      "runs E // max_epochs trials (default: 12 x max_epochs)")
    p.add_argument("--seeds", type=int, default=3, metavar="K", help="repeat both methods with seeds "
                   "0..K-1; the median counts (default: 3)")
    p.add_argument("--metric", help="the validation metric to optimise and compare (default: the space's, "
                   "val_loss for the default space)")
    p.add_argument("--max-epochs", type=int, metavar="N", help="epochs of each random trial and ASHA's max "
                   "(default: 9)")
    p.add_argument("--results-dir", default="results", metavar="DIR", help="where bench_search.md, .csv and "
                   ".png go, and the feature cache (default: results)")
    p.add_argument("--smoke", action="store_true", help="a tiny run of seconds (tiny demo or the given data, "
                   "2 random trials of 2 epochs, one at a time, one seed): to check the command end to end")


def overrides_for(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the options (validated by :func:`genre_ray.config.load_config`)."""
    results = Path(args.results_dir)
    out = dict(SMOKE_OVERRIDES if args.smoke else DEFAULT_OVERRIDES)
    if args.space == DEFAULT_SPACE and not args.smoke:
        out["search.metric"] = "val_loss"  # song accuracy on the demo ties at the top; the loss does not
    out.update({"output.results_dir": str(results), "data.path": str(results / DEMO_ROOT)})
    if args.data:
        out.update(data_overrides(args.data))
    out["split.folds"] = getattr(args, "folds", None) or None  # one validation split unless --folds
    if args.metric:
        out["search.metric"] = args.metric
    if args.max_epochs:
        out.update({"train.epochs": args.max_epochs, "search.max_epochs": args.max_epochs})
        out["search.grace_period"] = min(out["search.grace_period"], args.max_epochs)
    return {**out, **getattr(args, "overrides", {})}  # --set last: it wins


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments, print the report, return the exit status."""
    import ray

    from genre_ray.config import ConfigError, load_config

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t0 = time.perf_counter()
    overrides = overrides_for(args)
    try:
        cfg = load_config(args.space, overrides)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    epochs = cfg.search.max_epochs
    trials = args.random_trials or (max(1, args.budget // epochs) if args.budget else
                                    (2 if args.smoke else DEFAULT_RANDOM_TRIALS))
    seeds = range(1 if args.smoke else args.seeds)
    for noisy in ("ray", "ray.data", "ray.tune"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = not ray.is_initialized()  # a caller's Ray session (tests) is left running
    if started:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as storage:
            runs = run_search_bench(cfg, seeds, trials, Path(storage))
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    out = Path(args.out) if getattr(args, "out", None) else Path(args.results_dir) / "bench_search.md"
    shown = {k: v for k, v in overrides.items() if k not in ("output.results_dir", "data.path")}
    md, path_csv = report(runs, cfg, out, command_line(getattr(args, "argv", None)), time.perf_counter() - t0,
                          shown)
    png = plot(runs, cfg.search.metric, out.with_suffix(".png"))
    print(md.read_text())
    print(f"wrote {md}, {path_csv} and {png}")
    return 0
