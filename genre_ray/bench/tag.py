"""Time ``python -m genre_ray.tag`` against a sequential loop over the same songs with the same model.

loop   mlflow.pyfunc.load_model(URI), then predict(pd.DataFrame({"path": [p]})) for one file after
       another, with torch's default threads: what a user writes without a framework. Its decoding,
       features and network are the same code as tag's (the checkout's genre_ray; checked).
tag    genre_ray.tag.run_tag, the function the CLI calls, on the whole folder, from an empty parts
       folder each run: it loads the model, then Ray Data actors (one CPU and one torch thread
       each) read, decode, featurize and classify the files; the table is written to Parquet.
       Timed with 1 and with 2 workers. Ray is started once, before any timing (ray.init is
       reported apart; a CLI run pays it once).

Three figures per method. Whole run: songs over the wall time of a complete run, its start-up
included (loop: loading the model; tag: loading the model, starting the dataset and its actors,
each actor loading the model, merging the table at the end). Steady: the rate once running (loop:
the songs over the predicting part; tag: measured in the actors, from the start of the first call
to the end of the last, every worker's idle tail included). Start-up: the time before the first
song is predicted. The OS file cache is warmed before any timing; the methods alternate run by
run (the loop, then tag with the most workers, then the others); each number is the median of the
runs. The pairs: the loop's seconds over those of the tag run right after it, per repeat, and
their median, which a slow spell of the machine lasting minutes does not bias.

Stages: one file at a time in this process, the time of each stage of a prediction with one torch
thread and with torch's default threads: the loop's threads speed up the torch stages (features,
network) but not decoding. Ceiling: the loop's work (pyfunc, default threads) and one worker's
(the classifier, --batch-files per call, one thread), alternating round by round in this process;
two workers at best halve one worker's time, so twice the loop's time over one worker's bounds
what tag with 2 workers can give over the loop.

CPU steal: on a shared cloud host a neighbour's load takes CPU time from this machine while its own
load average stays low, and it slows the methods unequally (measured here: 12% steal made one loop
run 40% slower). Each run measures the steal (/proc/stat); one above --max-steal is done again, up
to 3 tries, and the table shows the steal of the runs kept and how many were redone.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genre_ray.bench import (
    StealMeter,
    command_line,
    load_average,
    machine_summary,
    markdown_table,
    write_report,
)
from genre_ray.bench._tag_inputs import LibrarySpec, bench_model, ceiling, ensure_library, stages
from genre_ray.data.demo import DemoSpec

HELP = "songs/s of python -m genre_ray.tag (1 and 2 workers) against a sequential pyfunc loop"

log = logging.getLogger("genre_ray.bench")

DEFAULT_OUT = Path("results/bench_tag.md")
CACHE = Path("results/cache/bench_tag")
TARGET = 1.8  # tag with 2 workers over the loop, on 2 cores


@dataclass
class Method:
    """One method's timed runs over ``songs`` songs (seconds; steady in songs/s)."""

    name: str
    songs: int
    runs: list[float] = field(default_factory=list)
    steady_runs: list[float] = field(default_factory=list)
    startup_runs: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)  # the 1-minute load average as each run started
    steals: list[float] = field(default_factory=list)  # the share of CPU time stolen during each run
    discarded: list[float] = field(default_factory=list)  # the steal of runs dropped and done again
    note: str = ""

    def add(self, run: Run) -> None:
        """Keep one timed run."""
        self.runs.append(run.seconds)
        self.steady_runs.append(run.steady)
        self.startup_runs.append(run.startup)
        self.loads.append(run.load)
        self.steals.append(run.steal)

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def songs_per_s(self) -> float:
        return self.songs / self.seconds

    @property
    def steady(self) -> float:
        """Songs/s once running (without steady runs: the whole-run rate)."""
        return statistics.median(self.steady_runs) if self.steady_runs else self.songs_per_s

    @property
    def startup_s(self) -> float:
        return statistics.median(self.startup_runs) if self.startup_runs else 0.0



@dataclass
class Run:
    """One timed run: seconds, songs/s once running, start-up seconds, load as it began, steal."""

    seconds: float
    steady: float
    startup: float
    load: float
    steal: float = float("nan")


# ------------------------------------------------------------------------------------------ timing

def call_rates(calls: list[tuple[float, float, int]], started: float) -> tuple[float, float]:
    """Songs/s once running (the rows, over the first call's start to the last call's end: every
    worker's idle tail included) and the start-up (``started`` to the first call's start), from
    the calls of :func:`genre_ray.bench._timed_tag.timed_calls`; NaN without calls."""
    if not calls:
        return float("nan"), float("nan")
    first, last = min(c[0] for c in calls), max(c[1] for c in calls)
    rows = sum(c[2] for c in calls)
    return (rows / (last - first) if last > first else float("nan")), first - started


def _same_code(model: Any) -> None:
    """Refuse a loop that would run other decoding code than tag (a model's packaged copy of genre_ray)."""
    from genre_ray.serving import classifier

    used = Path(inspect.getfile(type(model.unwrap_python_model().classifier))).resolve()
    if used != Path(classifier.__file__).resolve():
        raise RuntimeError(f"the loop's model runs {used}, not this checkout's {classifier.__file__}")


def time_loop(uri: str, tracking: str, paths: list[str]) -> Run:
    """One loop run: load the pyfunc model, then one ``predict`` per file."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking)
    load = load_average()
    with StealMeter() as steal:
        t0 = time.perf_counter()
        model = mlflow.pyfunc.load_model(uri)
        t1 = time.perf_counter()
        for path in paths:
            model.predict(pd.DataFrame({"path": [path]}))
        t2 = time.perf_counter()
    _same_code(model)
    return Run(t2 - t0, len(paths) / (t2 - t1), t1 - t0, load, steal.fraction)


def time_tag(library: Path, uri: str, tracking: str, workers: int, batch_files: int, scratch: Path) -> Run:
    """One ``run_tag`` run from an empty parts folder."""
    from genre_ray.serving.tag import run_tag

    load = load_average()
    from genre_ray.bench._timed_tag import timed_calls

    with tempfile.TemporaryDirectory(dir=scratch) as tmp, timed_calls() as calls, StealMeter() as steal:
        started, t0 = time.time(), time.perf_counter()
        table, summary = run_tag(library, uri, Path(tmp) / "predictions.parquet", tracking_uri=tracking,
                                 workers=workers, batch_files=batch_files)
        seconds = time.perf_counter() - t0
    if table["error"].notna().any():
        log.warning("%d files failed: %s", table["error"].notna().sum(), summary.failed)
    steady, startup = call_rates(calls, started)
    return Run(seconds, steady, startup, load, steal.fraction)


def _timed(method: Method, once: Any, max_load: float | None, max_steal: float | None,
           tries: int = 3) -> None:
    """Run ``once()`` and keep its timing; a run during which the hypervisor took more than
    ``max_steal`` of the CPU is dropped and done again, up to ``tries`` times in all (the last is
    kept whatever its steal, and the report shows it)."""
    for attempt in range(tries):
        _quiet(max_load)
        run = once()
        last = attempt == tries - 1
        if max_steal is None or not run.steal > max_steal or last:
            method.add(run)
            return
        log.warning("%s: %.1f%% of the CPU was stolen by the host during the run; running it again",
                    method.name, 100 * run.steal)
        method.discarded.append(run.steal)


def _quiet(max_load: float | None) -> None:
    """On a shared machine: wait (up to 5 minutes) until the 1-minute load average is below ``max_load``."""
    if max_load is not None:
        from genre_ray.bench import wait_for_quiet

        wait_for_quiet(max_load, timeout_s=300)


def time_all(library: Path, uri: str, tracking: str, workers: list[int], repeats: int, batch_files: int,
             scratch: Path, max_load: float | None = None,
             max_steal: float | None = None) -> tuple[Method, dict[int, Method]]:
    """The loop and ``run_tag`` per worker count, alternating, so that a busy spell on the machine
    hits every method alike; with ``max_load``, each run waits for a quiet machine first; with
    ``max_steal``, a run slowed by the host (CPU steal above it) is done again."""
    import torch

    from genre_ray.serving.tag import list_library

    paths = list_library(library)["path"].tolist()
    loop = Method("loop (pyfunc, one file at a time)", len(paths),
                  note=f"torch threads {torch.get_num_threads()}; start-up = mlflow.pyfunc.load_model")
    tags = {w: Method(f"tag, {w} worker{'s' if w > 1 else ''}", len(paths),
                      note=f"{batch_files} files per forward pass; start-up = until the first actor call "
                      "starts (model, dataset, actors start and load the model)") for w in workers}
    for _ in range(repeats):
        _timed(loop, lambda: time_loop(uri, tracking, paths), max_load, max_steal)
        for w in sorted(workers, reverse=True):  # the compared one right after the loop: paired runs
            _timed(tags[w], lambda w=w: time_tag(library, uri, tracking, w, batch_files, scratch), max_load,
                   max_steal)
    return loop, tags



# ------------------------------------------------------------------------------------------ report

def _rows(loop: Method, tags: dict[int, Method]) -> list[dict[str, Any]]:
    rows = []
    for m in [loop, *tags.values()]:
        rows.append({"method": m.name, "songs": m.songs, "seconds": round(m.seconds, 3),
                     "songs_per_s": round(m.songs_per_s, 2), "steady_songs_per_s": round(m.steady, 2),
                     "startup_s": round(m.startup_s, 2),
                     "over_loop": round(m.songs_per_s / loop.songs_per_s, 3),
                     "steady_over_loop": round(m.steady / loop.steady, 3), "runs": len(m.runs),
                     "runs_s": " ".join(f"{x:.2f}" for x in m.runs),
                     "steady_runs": " ".join(f"{x:.1f}" for x in m.steady_runs),
                     "loads": " ".join(f"{x:.1f}" for x in m.loads),
                     "steals": " ".join(f"{100 * x:.1f}" for x in m.steals),
                     "discarded": len(m.discarded), "note": m.note})
    return rows


def paired_ratios(loop: Method, top: Method) -> list[float]:
    """Songs/s of ``top`` over the loop's, run by run: each pair ran back to back, so a slow spell of
    the machine that lasts minutes hits both of a pair (same songs: the ratio of their seconds)."""
    return [a / b for a, b in zip(loop.runs, top.runs, strict=False) if b > 0]


def _targets(loop: Method, tags: dict[int, Method], ray_s: float) -> list[dict[str, Any]]:
    top, one = tags[max(tags)], tags[min(tags)]
    cli = top.songs / (top.seconds + ray_s)
    out = []
    for label, a, b in (("whole run", top.songs_per_s, loop.songs_per_s), ("steady", top.steady, loop.steady),
                        ("whole run with ray.init (a CLI run)", cli, loop.songs_per_s)):
        out.append({"ratio": f"{top.name} / loop, {label}", "value": f"{a / b:.2f}x",
                    "target": f">= {TARGET}x", "met": "yes" if a / b >= TARGET else "no"})
    pairs = paired_ratios(loop, top)
    if len(pairs) > 1:
        value = statistics.median(pairs)
        out.append({"ratio": f"{top.name} / loop, whole run, median of the pairs run back to back "
                             f"({', '.join(f'{r:.2f}' for r in pairs)})",
                    "value": f"{value:.2f}x", "target": f">= {TARGET}x",
                    "met": "yes" if value >= TARGET else "no"})
    if len(tags) > 1:
        scaling = (("whole run", top.songs_per_s, one.songs_per_s), ("steady", top.steady, one.steady))
        for label, a, b in scaling:
            out.append({"ratio": f"{top.name} / {one.name}, {label} (scaling)", "value": f"{a / b:.2f}x",
                        "target": "", "met": ""})
    return out


def _spread_warning(methods: list[Method]) -> str:
    """A warning when a method's runs differ by more than 30%: the machine was busy, the ratios unsure."""
    spread = {m.name: max(m.runs) / min(m.runs) for m in methods if m.runs and min(m.runs) > 0}
    wide = {k: v for k, v in spread.items() if v > 1.3}
    if not wide:
        return ""
    which = ", ".join(f"{k} ({v:.1f}x)" for k, v in wide.items())
    return (f"\n\n**Unreliable**: the slowest run over the fastest is above 1.3 for {which}. Other processes "
            "were using the cores, or the host took CPU time (see the steal column), and they slow the "
            "methods unequally; run again on a quiet machine (`--wait-load`, `--max-steal`).")


def _stage_section(one: dict[str, float], default: dict[str, float], threads: int, files: int,
                   rounds: tuple[list[float], list[float]], batch_files: int, probe_files: int) -> str:
    rows = [{"stage": k, "one": round(one[k], 1), "default": round(default[k], 1)} for k in one]
    rows.append({"stage": "total", "one": round(sum(one.values()), 1),
                 "default": round(sum(default.values()), 1)})
    table = markdown_table(rows, {"stage": "stage", "one": "ms per file, 1 torch thread",
                                  "default": f"ms per file, {threads} torch threads (the loop's)"})
    loop, single = rounds
    ratios = [2 * a / b for a, b in zip(loop, single, strict=True)]
    ceiling_rows = [{"round": i + 1, "loop": round(a, 1), "one": round(b, 1), "ratio": f"{r:.2f}x"}
                    for i, (a, b, r) in enumerate(zip(loop, single, ratios, strict=True))]
    ceiling_table = markdown_table(ceiling_rows, {
        "round": "round", "loop": f"loop: ms per file (pyfunc, 1 file per predict, {threads} torch threads)",
        "one": f"one worker's work: ms per file ({batch_files} files per call, 1 torch thread)",
        "ratio": "2 x loop / one worker"})
    return (f"{table}\n\nMeasured on the first {files} files, one at a time, in this process, after the "
            "timed runs. The loop's threads speed up the torch stages (features, network), not decoding.\n\n"
            f"**Ceiling.** The loop's work and one worker's, alternating round by round on the same "
            f"first {probe_files} files in this process:\n\n{ceiling_table}\n\nTwo workers of one thread "
            "each, with no Ray cost and no start-up at all, would reach about "
            f"**{statistics.median(ratios):.2f}x** the loop (the median of the rounds): the most that tag "
            "with 2 workers can give over this loop on this machine; the whole-run ratio also pays tag's "
            "start-up.")


def report(loop: Method, tags: dict[int, Method], info: dict[str, str], stage_text: str, ray_s: float,
           out: Path, command: str) -> tuple[Path, Path]:
    """Write the Markdown report and its CSV; returns both paths."""
    rows = _rows(loop, tags)
    columns = {"method": "method", "songs": "songs", "seconds": "seconds (median)",
               "songs_per_s": "songs/s, whole run", "steady_songs_per_s": "songs/s, steady",
               "startup_s": "start-up s", "over_loop": "÷ loop, whole run",
               "steady_over_loop": "÷ loop, steady", "runs_s": "runs (s)",
               "steady_runs": "steady songs/s per run", "loads": "load as each run started",
               "steals": "CPU steal % per run", "discarded": "runs redone (steal)"}
    header = {**machine_summary(("ray", "torch", "mlflow", "librosa", "soundfile")), **info,
              "command": f"`{command}`"}
    notes = "\n".join(f"- {m.name}: {m.note}" for m in [loop, *tags.values()])
    target_columns = {"ratio": "ratio of songs/s", "value": "measured", "target": "target", "met": "met"}
    sections = [("Throughput", markdown_table(rows, columns) + "\n\n" + notes),
                ("Targets", markdown_table(_targets(loop, tags, ray_s), target_columns) + _spread_warning(
                    [loop, *tags.values()])),
                ("Stages", stage_text),
                ("Methods", "```\n" + (__doc__ or "").strip() + "\n```")]
    return write_report(out, "Tagging benchmark", header, sections, rows)


# ------------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m genre_ray.bench tag``."""
    p.add_argument("--data", metavar="DIR", help="a music folder (any layout); default: --library")
    p.add_argument("--library", choices=("mp3", "demo"), default="mp3", help="the generated library: mp3 "
                   "(default: --files MP3 files of 30 s, 44.1 kHz stereo, as real libraries are) or demo "
                   "(416 demo songs of 10 s, 22.05 kHz mono WAV); made once into CACHE_DIR, not timed")
    p.add_argument("--files", type=int, default=LibrarySpec.files, metavar="N", help="files of the mp3 "
                   f"library (default: {LibrarySpec.files})")
    p.add_argument("--model", metavar="URI", help="the model (models:/..., runs:/... or a folder); default: "
                   "a smoke search of cnn.yaml, trained once into CACHE_DIR/model")
    p.add_argument("--tracking-uri", metavar="URI", help="the MLflow store of --model")
    p.add_argument("--workers", default="1,2", metavar="N,M", help="worker counts of tag; the largest is "
                   "compared with the loop, and with the smallest for scaling (default: 1,2)")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs of each, alternating; "
                   "medians (default: 3)")
    p.add_argument("--batch-files", type=int, default=4, metavar="N", help="tag's files per forward pass "
                   "(default: 4)")
    p.add_argument("--songs", type=int, metavar="N", help="use only the first N songs (default: all)")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="PATH", help="the Markdown report; a CSV "
                   f"beside it (default: {DEFAULT_OUT})")
    p.add_argument("--cache-dir", default=str(CACHE), metavar="DIR", help="where the library, the model "
                   f"and each run's scratch files go (default: {CACHE})")
    p.add_argument("--max-steal", type=float, default=2.0, metavar="PCT", help="do a run again (up to 3 "
                   "tries) when the host took more than PCT%% of the CPU during it, as on a busy cloud host "
                   "(Linux /proc/stat; default: 2; -1: keep every run)")
    p.add_argument("--smoke", action="store_true", help="tiny: 12 MP3 files of 4 s, 1 repeat (for tests)")


def _inputs(args: argparse.Namespace, cache: Path) -> tuple[Path, str, str, str]:
    """The library, its description, the model URI and its tracking URI."""
    from genre_ray.data.demo import ensure_demo_collection

    if args.data:
        library, what = Path(args.data), "a given folder"
    elif args.library == "demo":
        spec = DemoSpec(genres=8, songs_per_genre=52, seconds=10.0)
        library, what = ensure_demo_collection(cache / "demo", spec), "the demo: 10 s, 22.05 kHz mono WAV"
    else:
        spec_mp3 = LibrarySpec(12, 3, DemoSpec(seconds=4.0, sample_rate=44100)) if args.smoke else \
            LibrarySpec(files=args.files)
        library = ensure_library(cache / f"mp3-{spec_mp3.files}-{spec_mp3.song.seconds:g}s", spec_mp3)
        what = spec_mp3.describe()
    if args.model:
        from genre_ray.tracking import default_tracking_uri

        return library, what, args.model, args.tracking_uri or default_tracking_uri("results")
    return (library, what, *bench_model(cache))


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments, print the report, return the exit status."""
    import ray
    import torch

    from genre_ray.serving.tag import list_library, ray_start

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("ray", "ray.data", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    workers = sorted({int(w) for w in args.workers.split(",")})
    repeats = 1 if args.smoke else args.repeats
    started = not ray.is_initialized()  # a caller's Ray session (tests) is left running
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        ray_s = ray_start(max(workers))  # first: a model trained here runs its search in this Ray
        source, what, uri, tracking = _inputs(args, cache)
        paths = list_library(source)["path"].tolist()[: args.songs]
        for path in paths:  # the OS file cache is warm for every method alike
            Path(path).read_bytes()
        load = load_average()
        with tempfile.TemporaryDirectory(dir=cache, prefix="run-") as scratch:
            library = source
            if args.songs:  # a library of the first N songs: links to the same files
                library = Path(scratch) / "songs"
                library.mkdir()
                for i, path in enumerate(paths):
                    (library / f"{i:05d}-{Path(path).name}").symlink_to(path)
            max_steal = args.max_steal / 100 if args.max_steal >= 0 else None
            loop, tags = time_all(library, uri, tracking, workers, repeats, args.batch_files, Path(scratch),
                                  getattr(args, "wait_load", None), max_steal)
            cores = int(ray.cluster_resources().get("CPU", 0))
        sample = paths[: min(len(paths), 8 if args.smoke else 64)]
        threads = torch.get_num_threads()
        _quiet(getattr(args, "wait_load", None))
        probe = sample[:32]
        rounds = ceiling(uri, tracking, probe, args.batch_files, 2 if args.smoke else 6)
        stage_text = _stage_section(stages(uri, tracking, sample, 1), stages(uri, tracking, sample, threads),
                                    threads, len(sample), rounds, args.batch_files, len(probe))
        load_after = load_average()
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    waited = (f"; every run waited (up to 5 min) for a load below {args.wait_load:g}, and the table gives "
              "the load as each began" if getattr(args, "wait_load", None) is not None else "")
    info = {"load": f"{load:.2f} before the timed runs, {load_after:.2f} after (1-minute load average, on a "
            f"machine shared with other processes, which slow the methods unequally){waited}",
            "library": f"{source.resolve()}: {len(paths)} songs; {what}",
            "model": f"{uri} ({tracking})", "Ray": f"{cores} CPUs; ray.init {ray_s:.2f} s, once, apart",
            "CPU steal": ("the share of CPU time the host took during each run (/proc/stat); "
                          + (f"a run above {args.max_steal:g}% was done again, up to 3 tries"
                             if args.max_steal >= 0 else "every run kept"))}
    md, path_csv = report(loop, tags, info, stage_text, ray_s, Path(args.out),
                          command_line(getattr(args, "argv", None)))
    print(md.read_text())
    print(f"wrote {md} and {path_csv}")
    return 0
