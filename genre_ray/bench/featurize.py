"""Time feature extraction three ways on the same files, in one run.

pipeline    genre_ray.features.pipeline.featurize, the Ray Data pipeline that the search runs: content
            hashing, Ray Data tasks that decode, featurize and write the Parquet cache, then
            the read-back. Each run gets a fresh, empty cache folder (always a cold cache).
            ray.init and warming the Ray workers are timed apart and not counted.
sequential  a plain loop in the style of student projects: librosa.load, then per 3-s clip
            librosa.feature.melspectrogram, .mfcc and .chroma_stft, one file after another
            (chroma with tuning=0 like the others, not a tuning estimate per clip). It may be
            timed on a subset of the songs (--seq-songs); its clips/s is then extrapolated.
floor       the pipeline's own computation (genre_ray's decode_clips and batched STFT
            features) in a pool of one process per core, no framework around it. Starting the
            pool (imports, first STFT) is timed apart and not counted.

All three compute log-mel (128 bands), MFCC (20) and chroma (12) of every non-overlapping
3-s clip at 22050 Hz with n_fft 2048 and hop 512, and deliver them as arrays to the caller.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genre_ray.bench import Timing, command_line, load_average, machine_summary, markdown_table, write_report
from genre_ray.bench._warm import DEMO_SPEC, start_ray

if TYPE_CHECKING:
    import pandas as pd

    from genre_ray.features import FeatureSettings

__all__ = ["BenchResult", "FloorPool", "bench_settings", "features_in_file_order",
           "librosa_clip_features", "run_featurize_bench", "run_pipeline", "start_ray", "time_sequential"]

log = logging.getLogger(__name__)

HELP = "time the Ray Data featurization against a plain librosa loop and a one-process-per-core floor"
DEFAULT_OUT = Path("results/bench_featurize.md")
DEMO_ROOT = Path("results/cache/bench_demo")
FLOOR_FILES_PER_TASK = 4  # small tasks so that neither process idles at the end


def bench_settings(**overrides: Any) -> FeatureSettings:
    """The features the source projects used, with any field overridden (tests use tiny ones)."""
    from genre_ray.features import FeatureSettings

    base: dict[str, Any] = {"kinds": ("logmel", "mfcc", "chroma"), "sample_rate": 22050,
                            "clip_seconds": 3.0, "clip_overlap": 0.0, "n_fft": 2048, "hop_length": 512,
                            "n_mels": 128, "n_mfcc": 20, "n_chroma": 12, "max_clips_per_song": None}
    return FeatureSettings(**{**base, **overrides})


@dataclass
class BenchResult:
    """The three timings on one collection."""

    pipeline: Timing
    sequential: Timing
    floor: Timing
    songs: int
    clips: int
    cores: int
    collection: str
    load: float = float("nan")  # 1-min load average before the run
    #: method -> (its files, kind -> (clips, bins, frames) in file order); only with keep_features
    features: dict[str, tuple[list[str], dict[str, np.ndarray]]] = field(default_factory=dict)
    #: peak memory per collection size (genre_ray.bench.memory.MemoryRow); empty: section skipped
    memory: list[Any] = field(default_factory=list)

    @property
    def over_sequential(self) -> float:
        return self.pipeline.clips_per_s / self.sequential.clips_per_s

    @property
    def over_floor(self) -> float:
        return self.pipeline.clips_per_s / self.floor.clips_per_s


def run_pipeline(manifest: pd.DataFrame, settings: FeatureSettings, cache_root: Path,
                 batch_files: int) -> tuple[float, Any]:
    """One timed :func:`genre_ray.features.pipeline.featurize` on a new, empty cache folder, hashing included.

    Returns:
        Seconds and the :class:`~genre_ray.features.pipeline.FeatureTable`.
    """
    from genre_ray.features.pipeline import featurize

    with tempfile.TemporaryDirectory(prefix=".bench-cold-", dir=cache_root) as cold:
        t0 = time.perf_counter()
        table = featurize(manifest[["path"]], settings, cold, batch_files=batch_files)
        return time.perf_counter() - t0, table


def librosa_clip_features(clip: np.ndarray, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """One clip's features with librosa's feature functions, each computing its own STFT.

    Chroma is asked for with ``tuning=0`` (what the batched features use) rather than letting
    librosa estimate the tuning of every clip, which would make this loop slower still.
    """
    import librosa

    s, out = settings, {}
    stft = {"sr": s.sample_rate, "n_fft": s.n_fft, "hop_length": s.hop_length}
    mel = {"n_mels": s.n_mels, "fmin": s.f_min, "fmax": s.f_max}
    if "logmel" in s.kinds:
        power = librosa.feature.melspectrogram(y=clip, **stft, **mel)
        out["logmel"] = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=s.top_db)
    if "mfcc" in s.kinds:
        out["mfcc"] = librosa.feature.mfcc(y=clip, n_mfcc=s.n_mfcc, **stft, **mel)
    if "chroma" in s.kinds:
        out["chroma"] = librosa.feature.chroma_stft(y=clip, n_chroma=s.n_chroma, tuning=0.0, **stft)
    return out


def time_sequential(paths: list[str], settings: FeatureSettings) -> tuple[Timing, dict[str, np.ndarray]]:
    """Time the student-style loop over ``paths``; its first clip is computed once untimed (warm-up).

    Returns:
        The timing and ``kind -> (clips, bins, frames)`` in file order.
    """
    import librosa

    from genre_ray.data.audio import cut_clips

    t0 = time.perf_counter()
    first, _ = librosa.load(paths[0], sr=settings.sample_rate)
    librosa_clip_features(cut_clips(first, settings.clip_samples, settings.clip_overlap)[0], settings)
    startup = time.perf_counter() - t0
    feats: dict[str, list[np.ndarray]] = {k: [] for k in settings.kinds}
    t1 = time.perf_counter()
    for path in paths:
        wave, _ = librosa.load(path, sr=settings.sample_rate)
        for clip in cut_clips(wave, settings.clip_samples, settings.clip_overlap):
            for kind, arr in librosa_clip_features(clip, settings).items():
                feats[kind].append(arr)
    seconds = time.perf_counter() - t1
    out = {k: np.stack(v) for k, v in feats.items()}
    clips = len(next(iter(out.values())))
    return Timing("sequential", len(paths), clips, [seconds], startup), out


_FLOOR: dict[str, Any] = {}  # per pool process: its settings and the start-up barrier


def _floor_init(settings: dict[str, Any], barrier: Any) -> None:
    import torch

    from genre_ray.features import FeatureSettings

    torch.set_num_threads(1)  # one process per core, like one Ray task per CPU
    _FLOOR["settings"] = FeatureSettings(**{**settings, "kinds": tuple(settings["kinds"])})
    _FLOOR["barrier"] = barrier


def _floor_warm(_: int) -> int:
    """Import and run everything once, then wait for the other processes to do the same."""
    from genre_ray.features.pipeline import clip_features

    s = _FLOOR["settings"]
    clip_features(np.random.default_rng(0).standard_normal((2, s.clip_samples)).astype(np.float32), s)
    _FLOOR["barrier"].wait(timeout=300)  # so that each process takes exactly one warm-up task
    return os.getpid()


def _floor_task(paths: list[str]) -> dict[str, np.ndarray]:
    from genre_ray.data.audio import decode_clips
    from genre_ray.features.pipeline import clip_features

    s = _FLOOR["settings"]
    waves = [decode_clips(path, s.sample_rate, s.clip_samples, s.clip_overlap, s.max_clips_per_song)
             for path in paths]
    return clip_features(np.concatenate(waves), s)


class FloorPool:
    """One process per core, started and warmed once (the floor's start-up), then timed per run."""

    def __init__(self, settings: FeatureSettings, processes: int) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that runs Ray's threads
        self.settings, self.processes = settings, processes
        t0 = time.perf_counter()
        self._pool = ctx.Pool(processes, initializer=_floor_init,
                              initargs=(settings.as_dict(), ctx.Barrier(processes)))
        self._pool.map(_floor_warm, range(processes), chunksize=1)
        self.startup_s = time.perf_counter() - t0

    def run(self, paths: list[str]) -> tuple[float, dict[str, np.ndarray]]:
        """Features of ``paths``, a few files per task, gathered here in file order; and the seconds."""
        step = FLOOR_FILES_PER_TASK
        t0 = time.perf_counter()
        tasks = [paths[i:i + step] for i in range(0, len(paths), step)]
        parts = self._pool.map(_floor_task, tasks, chunksize=1)
        out = {k: np.concatenate([p[k] for p in parts]) for k in self.settings.kinds}
        return time.perf_counter() - t0, out

    def __enter__(self) -> FloorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.close()
        self._pool.join()


def _evenly(n_total: int, k: int | None) -> np.ndarray:
    """Indices of ``k`` items spread evenly over ``n_total`` (so every genre is represented)."""
    if not k or k >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, k).round().astype(int))


def features_in_file_order(table: Any, paths: list[str]) -> dict[str, np.ndarray]:
    """A :class:`~genre_ray.features.pipeline.FeatureTable`'s rows (sorted by content hash) in file order."""
    from genre_ray.features.pipeline import content_hashes

    sha = dict(zip(paths, content_hashes(paths), strict=True))
    rows: dict[str, list[int]] = {}
    for i, h in enumerate(table.clips["sha"]):  # already in clip order within each file
        rows.setdefault(h, []).append(i)
    order = [i for p in paths for i in rows.get(sha[p], [])]
    return {k: v[order] for k, v in table.features.items()}


def run_featurize_bench(root: str | os.PathLike[str], *, songs: int | None = None, seq_songs: int | None = 20,
                        cpus: int | None = None, repeats: int = 5, batch_files: int = 8,
                        cache_root: str | os.PathLike[str] = "results/cache",
                        settings: FeatureSettings | None = None, keep_features: bool = False) -> BenchResult:
    """Time the three methods on the songs of the collection at ``root``.

    Args:
        root: a folder-per-genre collection.
        songs: use this many songs, spread evenly over the collection (default: all).
        seq_songs: time the sequential loop on this many of them (None or 0: all).
        cpus: CPUs for Ray and processes for the floor (default: every core).
        repeats: timed runs of the pipeline and the floor; the median counts.
        batch_files: the pipeline's files per task (the search's ``features.batch_files``).
        cache_root: where the pipeline's temporary cold caches are made.
        settings: the features (default: :func:`bench_settings`).
        keep_features: also return every method's features (to check that they agree).

    Returns:
        The :class:`BenchResult`.
    """
    from genre_ray.data.collection import folder_manifest

    settings, cache, load_start = settings or bench_settings(), Path(cache_root), load_average()
    manifest, _ = folder_manifest(Path(root))
    manifest = manifest.iloc[_evenly(len(manifest), songs)].reset_index(drop=True)
    for path in manifest["path"]:  # the OS file cache is warm for every method alike
        Path(path).read_bytes()
    start = start_ray(manifest, settings, cpus or os.cpu_count() or 1, cache)
    pipe, floor, table, paths, floor_features = _pipeline_and_floor(manifest, settings, cache, batch_files,
                                                                    repeats, start)
    seq_paths = [paths[i] for i in _evenly(len(paths), seq_songs)]
    seq, seq_features = time_sequential(seq_paths, settings)
    if len(seq_paths) < len(paths):
        seq.note = f"timed on {len(seq_paths)} of {len(paths)} songs; clips/s extrapolated to all"
    result = BenchResult(pipe, seq, floor, len(paths), pipe.clips, start["cores"], str(Path(root).resolve()),
                         load_start)
    if keep_features:
        result.features = {"pipeline": (paths, features_in_file_order(table, paths)),
                           "floor": (paths, floor_features), "sequential": (seq_paths, seq_features)}
    return result


def _pipeline_and_floor(manifest: pd.DataFrame, settings: FeatureSettings, cache: Path, batch_files: int,
                        repeats: int, start: dict[str, Any]) -> tuple[Timing, Timing, Any, list[str], dict]:
    """Pipeline and floor runs, alternating so that a busy spell on the machine hits both alike."""
    pipe_runs, floor_runs, infos = [], [], []
    seconds, table = run_pipeline(manifest, settings, cache, batch_files)
    bad = set(table.skipped["path"])
    paths = [p for p in manifest["path"] if p not in bad]  # the floor skips what the pipeline skipped
    with FloorPool(settings, start["cores"]) as pool:
        for i in range(repeats):
            if i:
                seconds, table = run_pipeline(manifest, settings, cache, batch_files)
            pipe_runs.append(seconds)
            infos.append(table.info)
            floor_seconds, features = pool.run(paths)
            floor_runs.append(floor_seconds)
    info = {**start, **infos[int(np.argsort(pipe_runs)[len(pipe_runs) // 2])]}  # the median run's breakdown
    startup = start["ray_init_s"] + start["warm_s"]
    pipe = Timing("pipeline", len(manifest), len(table.clips), pipe_runs, startup,
                  f"cold cache; start-up = ray.init {start['ray_init_s']:.2f} s + worker warm-up "
                  f"{start['warm_s']:.2f} s", info)
    floor = Timing("floor", len(paths), len(next(iter(features.values()))), floor_runs, pool.startup_s,
                   f"{start['cores']} processes, {FLOOR_FILES_PER_TASK} files per task")
    pipe.note, floor.note = f"{pipe.note}; {pipe.runs_text()}", f"{floor.note}; {floor.runs_text()}"
    return pipe, floor, table, paths, features


def _breakdown(r: BenchResult) -> list[dict[str, Any]]:
    """Where the pipeline's median run went; in-task times are summed over tasks, so / cores."""
    i, cores = r.pipeline.info, r.cores
    rows = [("content hashing (driver)", i.get("hash_s", 0.0)),
            ("Ray Data run (tasks + scheduling)", i.get("compute_s", 0.0))]
    if "task_write_s" in i:
        rows += [(f"  of which decode + features in tasks (sum / {cores})", i["task_featurize_s"] / cores),
                 (f"  of which Parquet cache write in tasks (sum / {cores})", i["task_write_s"] / cores)]
    rows.append(("Parquet cache read back (driver)", i.get("load_s", 0.0)))
    if "task_write_s" in i:
        rows.append(("cache write + read", i["task_write_s"] / cores + i.get("load_s", 0.0)))
    return [{"part": k, "seconds": round(v, 3), "share": f"{v / r.pipeline.seconds:.0%}"} for k, v in rows]


def report(r: BenchResult, out: str | os.PathLike[str], command: str,
           settings: FeatureSettings) -> tuple[Path, Path]:
    """Write the Markdown report and the CSV of its throughput table beside it; returns both paths."""
    s = settings
    header = {**machine_summary(), "load": f"{r.load:.2f} before the run (1-min load average; other "
              "processes on the machine slow every method)", "command": f"`{command}`",
              "collection": r.collection, "songs": str(r.songs), "clips": str(r.clips), "cores": str(r.cores),
              "features": f"log-mel {s.n_mels}, MFCC {s.n_mfcc}, chroma {s.n_chroma} per "
              f"{s.clip_seconds:g}-s clip (overlap {s.clip_overlap:g}), {s.sample_rate} Hz, n_fft {s.n_fft}, "
              f"hop {s.hop_length}"}
    rows = [{"method": t.method, "songs": t.songs, "clips": t.clips, "seconds": round(t.seconds, 3),
             "clips_per_s": round(t.clips_per_s, 1), "startup_s": round(t.startup_s, 2),
             "pipeline_over_this": round(r.pipeline.clips_per_s / t.clips_per_s, 3), "runs": len(t.runs),
             "note": t.note} for t in (r.pipeline, r.sequential, r.floor)]
    columns = {"method": "method", "songs": "songs timed", "clips": "clips timed", "seconds": "seconds",
               "clips_per_s": "clips/s", "startup_s": "start-up s (not counted)",
               "pipeline_over_this": "pipeline ÷ this", "note": "note"}
    targets = [{"ratio": "pipeline / sequential", "value": f"{r.over_sequential:.1f}x", "target": ">= 10x",
                "met": "yes" if r.over_sequential >= 10 else "no"},
               {"ratio": "pipeline / floor", "value": f"{r.over_floor:.2f}", "target": ">= 0.5",
                "met": "yes" if r.over_floor >= 0.5 else "no"},
               {"ratio": "floor / sequential (the most the first ratio could be)", "target": "", "met": "",
                "value": f"{r.floor.clips_per_s / r.sequential.clips_per_s:.1f}x"}]
    tasks = r.pipeline.info.get("tasks")
    title = f"Where the pipeline's {r.pipeline.seconds:.2f} s went (median run, {tasks} tasks)"
    sections = [
        ("Throughput", markdown_table(rows, columns)),
        ("Targets", markdown_table(targets, {"ratio": "ratio of clips/s", "value": "measured",
                                             "target": "target", "met": "met"})),
        (title, markdown_table(_breakdown(r), {"part": "part", "seconds": "seconds", "share": "share"})),
        ("Methods", "```\n" + (__doc__ or "").strip() + "\n```\n\nThe OS file cache is warmed for all files "
         "before any timing. In-task times come from Ray Data's per-stage stats, summed over tasks."),
    ]
    if r.memory:
        from genre_ray.bench.memory import memory_section

        sections.insert(3, memory_section(r.memory))
    return write_report(out, "Featurization benchmark", header, sections, rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m genre_ray.bench featurize``."""
    songs = DEMO_SPEC.genres * DEMO_SPEC.songs_per_genre
    p.add_argument("dir", nargs="?", metavar="DIR", help="a folder-per-genre collection (<genre>/<file>, "
                   f"the GTZAN layout); default: a demo collection of {songs} songs of "
                   f"{DEMO_SPEC.seconds:g} s, generated once under {DEMO_ROOT}")
    p.add_argument("--songs", type=int, metavar="N",
                   help="use only N songs, spread evenly over the collection (default: all)")
    p.add_argument("--seq-songs", type=int, default=20, metavar="N", help="time the slow sequential "
                   "librosa loop on N of the songs and extrapolate its clips/s; 0 = all songs (default: 20)")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="PATH", help="the Markdown report; a CSV "
                   f"of the throughput table is written beside it, same name (default: {DEFAULT_OUT})")
    p.add_argument("--cpus", type=int, metavar="N", help="CPUs given to Ray and processes in the floor's "
                   "pool (default: every core of this machine)")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs of the pipeline and of "
                   "the floor, alternating; the median is reported (default: 5)")
    p.add_argument("--batch-files", type=int, default=8, metavar="N", help="the pipeline's files per Ray "
                   "Data task, as features.batch_files of a search space (default: 8)")
    p.add_argument("--cache-dir", default="results/cache", metavar="DIR", help="where the pipeline's "
                   "temporary, always empty, feature caches are made and removed (default: results/cache)")
    p.add_argument("--memory-sizes", default="100,400", metavar="N,M", help="the Peak memory section: one "
                   "cold-cache pipeline run per number of songs, taken from the collection, or from a demo "
                   f"collection of {DEMO_SPEC.seconds:g}-s songs generated once under {DEMO_ROOT.parent} "
                   "where the collection has fewer; 0 skips the section (default: 100,400)")


def _memory_rows(root: Path, args: argparse.Namespace, settings: FeatureSettings) -> list[Any]:
    """The Peak memory section's rows for ``--memory-sizes`` (none for 0)."""
    from genre_ray.bench.memory import parse_sizes, run_memory_bench

    sizes = parse_sizes(args.memory_sizes)
    if not sizes:
        return []
    return run_memory_bench(root, sizes, settings, cache_root=args.cache_dir, batch_files=args.batch_files,
                            cpus=args.cpus, demo_dir=DEMO_ROOT.parent)


def run_cli(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments, print the report, return the exit status."""
    import ray

    from genre_ray.data.demo import ensure_demo_collection

    for noisy in ("ray", "ray.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    root = Path(args.dir) if args.dir else ensure_demo_collection(DEMO_ROOT, DEMO_SPEC)
    settings = bench_settings()
    started = not ray.is_initialized()  # a caller's Ray session (tests) is left running
    try:
        result = run_featurize_bench(root, songs=args.songs, seq_songs=args.seq_songs, cpus=args.cpus,
                                     repeats=args.repeats, batch_files=args.batch_files,
                                     cache_root=args.cache_dir, settings=settings)
        result.memory = _memory_rows(root, args, settings)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    md, path_csv = report(result, args.out, command_line(getattr(args, "argv", None)), settings)
    print(md.read_text())
    print(f"wrote {md} and {path_csv}")
    return 0
