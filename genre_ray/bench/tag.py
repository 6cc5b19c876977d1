"""Time ``python -m genre_ray.tag`` against a sequential loop over the same songs with the same model.

loop   mlflow.pyfunc.load_model(URI) once, then predict(pd.DataFrame({"path": [p]})) for one file
       after another, with torch's default threads: what a user writes without a framework.
       Loading the model and a first, untimed prediction are its start-up, not counted.
tag    genre_ray.tag.run_tag on the whole folder, from an empty parts folder each run: Ray Data
       actors (one CPU and one torch thread each) that load the model and decode, featurize and
       classify the files; the table is written to Parquet. Timed with 1 and with 2 workers.
       ray.init is timed once, apart, and not counted.

Each tag run has a fixed cost that does not grow with the library: starting its actors and
loading the model in each. Two columns show it: songs/s over the whole run (fixed cost included:
what one run on this collection gives), and steady songs/s, the rate once running, from the
times at which rows reached the driver: the rows that came after every worker had delivered its
first call, over the time they took. The OS file cache is warmed before any timing; the methods
alternate run by run, and each number is the median of the runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genre_ray.bench import command_line, load_average, machine_summary, markdown_table, write_report

HELP = "songs/s of python -m genre_ray.tag (1 and 2 workers) against a sequential pyfunc loop"

log = logging.getLogger("genre_ray.bench")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path("results/bench_tag.md")
CACHE = Path("results/cache/bench_tag")
TARGET = 1.8  # tag with 2 workers over the loop, on 2 cores


@dataclass
class Method:
    """One method's timed runs over ``songs`` songs."""

    name: str
    songs: int
    runs: list[float] = field(default_factory=list)
    steady_runs: list[float] = field(default_factory=list)  # tag: songs/s once running, per run
    first_runs: list[float] = field(default_factory=list)  # tag: seconds until the first rows, per run
    startup_s: float = 0.0
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def songs_per_s(self) -> float:
        return self.songs / self.seconds

    @property
    def steady(self) -> float:
        """Songs/s once running (the loop has no start-up within a run: its whole-run rate)."""
        return statistics.median(self.steady_runs) if self.steady_runs else self.songs_per_s


# ------------------------------------------------------------------------------------------ inputs

def bench_model(cache: Path) -> tuple[str, str]:
    """A registered model for the benchmark: a quick search of cnn.yaml, made once under ``cache``.

    Returns:
        The model URI (``models:/genre-bench-tag@champion``) and its tracking URI.
    """
    from genre_ray.config import SMOKE_OVERRIDES, load_config
    from genre_ray.runner import run_search
    from genre_ray.serving import ServingError, load

    folder = (cache / "model").resolve()
    tracking, uri = f"sqlite:///{folder / 'mlflow.db'}", "models:/genre-bench-tag@champion"
    try:
        load(uri, tracking)
        return uri, tracking
    except ServingError:
        pass
    # Smoke-sized training, but features as cnn.yaml has them (every clip of a song, not 3).
    overrides = {**SMOKE_OVERRIDES, "features.max_clips_per_song": None, "task": "bench-tag",
                 "output.results_dir": str(folder), "tracking.uri": tracking}
    log.info("training the benchmark's model (a smoke search of cnn.yaml) into %s", folder)
    run_search(load_config(ROOT / "search_spaces" / "cnn.yaml", overrides))  # the store's first: champion
    return uri, tracking


# ------------------------------------------------------------------------------------------ timing

def load_loop(uri: str, tracking: str, paths: list[str]) -> tuple[Any, Method]:
    """The loop's model, loaded and run once (its start-up), and its empty :class:`Method`."""
    import mlflow
    import pandas as pd
    import torch

    mlflow.set_tracking_uri(tracking)
    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    model.predict(pd.DataFrame({"path": paths[:1]}))
    note = f"torch threads {torch.get_num_threads()}; start-up = load_model + 1 prediction"
    return model, Method("loop (pyfunc, one file at a time)", len(paths), startup_s=time.perf_counter() - t0,
                         note=note)


def time_loop(model: Any, paths: list[str]) -> float:
    """Seconds of one sequential pass: one ``predict`` per file."""
    import pandas as pd

    t0 = time.perf_counter()
    for path in paths:
        model.predict(pd.DataFrame({"path": [path]}))
    return time.perf_counter() - t0


def time_all(library: Path, uri: str, tracking: str, workers: list[int], repeats: int, batch_files: int,
             scratch: Path) -> tuple[Method, dict[int, Method]]:
    """The loop and ``run_tag`` per worker count, alternating, so that a busy spell on the machine
    hits every method alike."""
    from genre_ray.tag import list_library, run_tag

    paths = list_library(library)["path"].tolist()
    model, loop = load_loop(uri, tracking, paths)
    out = {w: Method(f"tag, {w} worker{'s' if w > 1 else ''}", len(paths)) for w in workers}
    for _ in range(repeats):
        loop.runs.append(time_loop(model, paths))
        for w in workers:
            with tempfile.TemporaryDirectory(dir=scratch) as tmp:
                t0 = time.perf_counter()
                table, summary = run_tag(library, uri, Path(tmp) / "predictions.parquet",
                                         tracking_uri=tracking, workers=w, batch_files=batch_files)
                out[w].runs.append(time.perf_counter() - t0)
            out[w].steady_runs.append(summary.steady_songs_per_s)
            out[w].first_runs.append(summary.first_rows_s)
            if table["error"].notna().any():
                log.warning("%d files failed: %s", table["error"].notna().sum(), summary.failed)
    for m in out.values():
        m.startup_s = statistics.median(m.first_runs)
        m.note = (f"{batch_files} files per forward pass; start-up = seconds until the first rows came back "
                  "(actors start, load the model, first call)")
    return loop, out


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
                     "steady_runs": " ".join(f"{x:.0f}" for x in m.steady_runs), "note": m.note})
    return rows


def _targets(loop: Method, tags: dict[int, Method]) -> list[dict[str, Any]]:
    top, one = tags[max(tags)], tags[min(tags)]
    out = []
    pairs = (("whole run", top.songs_per_s, loop.songs_per_s), ("steady", top.steady, loop.steady))
    for label, a, b in pairs:
        out.append({"ratio": f"{top.name} / loop, {label}", "value": f"{a / b:.2f}x",
                    "target": f">= {TARGET}x", "met": "yes" if a / b >= TARGET else "no"})
    if len(tags) > 1:
        pairs = (("whole run", top.songs_per_s, one.songs_per_s), ("steady", top.steady, one.steady))
        for label, a, b in pairs:
            out.append({"ratio": f"{top.name} / {one.name}, {label} (scaling)", "value": f"{a / b:.2f}x",
                        "target": "", "met": ""})
    return out


def report(loop: Method, tags: dict[int, Method], info: dict[str, str], out: Path, command: str
           ) -> tuple[Path, Path]:
    """Write the Markdown report and its CSV; returns both paths."""
    rows = _rows(loop, tags)
    columns = {"method": "method", "songs": "songs", "seconds": "seconds (median)",
               "songs_per_s": "songs/s, whole run", "steady_songs_per_s": "songs/s, steady",
               "startup_s": "start-up s (in whole run, not in steady)", "over_loop": "÷ loop, whole run",
               "steady_over_loop": "÷ loop, steady", "runs_s": "runs (s)",
               "steady_runs": "steady songs/s per run"}
    header = {**machine_summary(("ray", "torch", "mlflow", "librosa")), **info, "command": f"`{command}`"}
    notes = "\n".join(f"- {m.name}: {m.note}" for m in [loop, *tags.values()])
    target_columns = {"ratio": "ratio of songs/s", "value": "measured", "target": "target", "met": "met"}
    sections = [("Throughput", markdown_table(rows, columns) + "\n\n" + notes),
                ("Targets", markdown_table(_targets(loop, tags), target_columns)),
                ("Methods", "```\n" + (__doc__ or "").strip() + "\n```")]
    return write_report(out, "Tagging benchmark", header, sections, rows)


# ------------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m genre_ray.bench tag``."""
    p.add_argument("--data", metavar="DIR", help="a music folder (any layout); default: 416 demo songs of "
                   "10 s, generated once into CACHE_DIR/demo")
    p.add_argument("--model", metavar="URI", help="the model (models:/..., runs:/... or a folder); default: "
                   "a smoke search of cnn.yaml, trained once into CACHE_DIR/model")
    p.add_argument("--tracking-uri", metavar="URI", help="the MLflow store of --model")
    p.add_argument("--workers", default="1,2", metavar="N,M", help="worker counts of tag; the largest is "
                   "compared with the loop, and with the smallest for scaling (default: 1,2)")
    p.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs of each, alternating; "
                   "medians (default: 3)")
    p.add_argument("--batch-files", type=int, default=4, metavar="N", help="tag's files per actor call "
                   "(default: 4)")
    p.add_argument("--songs", type=int, metavar="N", help="use only the first N songs (default: all)")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="PATH", help="the Markdown report; a CSV "
                   f"beside it (default: {DEFAULT_OUT})")
    p.add_argument("--cache-dir", default=str(CACHE), metavar="DIR", help="where the demo songs, the model "
                   f"and each run's scratch files go (default: {CACHE})")
    p.add_argument("--smoke", action="store_true", help="tiny: 12 demo songs of 4 s, 1 repeat (for tests)")


def _inputs(args: argparse.Namespace, cache: Path) -> tuple[Path, str, str]:
    from genre_ray.data.demo import DemoSpec, ensure_demo_collection

    if args.data:
        library = Path(args.data)
    else:
        spec = DemoSpec(3, 4, 4.0) if args.smoke else DemoSpec(genres=8, songs_per_genre=52, seconds=10.0)
        library = ensure_demo_collection(cache / ("demo_smoke" if args.smoke else "demo"), spec)
    if args.model:
        from genre_ray.tracking import default_tracking_uri

        return library, args.model, args.tracking_uri or default_tracking_uri("results")
    return (library, *bench_model(cache))


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments, print the report, return the exit status."""
    import ray

    from genre_ray.tag import _ray_start, list_library

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
        ray_s = _ray_start(max(workers))  # first: a model trained here runs its search in this Ray
        source, uri, tracking = _inputs(args, cache)
        paths = list_library(source)["path"].tolist()[: args.songs]
        load = load_average()
        for path in paths:  # the OS file cache is warm for every method alike
            Path(path).read_bytes()
        with tempfile.TemporaryDirectory(dir=cache, prefix="run-") as scratch:
            library = source
            if args.songs:  # a library of the first N songs: links to the same files
                library = Path(scratch) / "songs"
                library.mkdir()
                for i, path in enumerate(paths):
                    (library / f"{i:05d}-{Path(path).name}").symlink_to(path)
            loop, tags = time_all(library, uri, tracking, workers, repeats, args.batch_files, Path(scratch))
            cores = int(ray.cluster_resources().get("CPU", 0))
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    info = {"load": f"{load:.2f} before the run (1-min load average; other processes slow every method)",
            "collection": f"{source.resolve()} ({len(paths)} songs)", "model": f"{uri} ({tracking})",
            "Ray": f"{cores} CPUs; ray.init {ray_s:.2f} s, not counted"}
    md, path_csv = report(loop, tags, info, Path(args.out), command_line(getattr(args, "argv", None)))
    print(md.read_text())
    print(f"wrote {md} and {path_csv}")
    return 0
