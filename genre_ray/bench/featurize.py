"""Time feature extraction on the same files, in one run, and the start-up before it.

pipeline    genre_ray.features.pipeline.featurize as the search calls it: content hashing, the
            pass that decodes, featurizes and writes the Parquet cache, then the read-back. A
            collection of at most IN_PROCESS_MAX_FILES files (256) is featurized in the calling
            process, a larger one in Ray Data tasks. Each run gets a fresh, empty cache folder
            (always a cold cache).
Ray Data    the same with in_process=False: always Ray Data tasks. ray.init and warming the Ray
            workers are timed apart and not counted.
sequential  a plain loop in the style of student projects: librosa.load, then per 3-s clip
            librosa.feature.melspectrogram, .mfcc and .chroma_stft, one file after another
            (chroma with tuning=0 like the others, not a tuning estimate per clip). It may be
            timed on a subset of the songs (--seq-songs); its clips/s is then extrapolated.
floor       the pipeline's own computation (genre_ray's decode_clips and batched STFT
            features) in a pool of one process per core, no framework around it. Starting the
            pool (imports, first STFT) is timed apart and not counted.

All compute log-mel (128 bands), MFCC (20) and chroma (12) of every non-overlapping
3-s clip at 22050 Hz with n_fft 2048 and hop 512, and deliver them as arrays to the caller.

Start-up: a fresh Python process (genre_ray.bench._startup) runs what a command runs before its
features: it imports the pipeline, starts a local Ray or joins a running one where the row says
so, and featurizes into an empty cache. Timed from just before the process starts to the
features returned (an upper bound on the first featurized batch), less the featurizing itself
(the median timed run of the same method, in a process already warm). Cold Ray session: no Ray
for it to join (RAY_ADDRESS=local: a Ray it starts is its own). Warm: it joins this benchmark's
Ray session, whose workers have featurized already. The cold rows run before the benchmark
starts its Ray, the warm ones after; within each, the rows alternate round by round, after one
untimed run that loads the libraries into the OS file cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genre_ray.bench import Timing, command_line, load_average, machine_summary, markdown_table, write_report
from genre_ray.bench._warm import DEMO_SPEC, start_ray

if TYPE_CHECKING:
    import pandas as pd

    from genre_ray.features import FeatureSettings

__all__ = ["STARTUP_TARGET_S", "BenchResult", "FloorPool", "Startup", "bench_settings", "features_in_file_order",
           "librosa_clip_features", "run_featurize_bench", "run_pipeline", "start_ray", "time_sequential",
           "time_startups"]

log = logging.getLogger(__name__)

HELP = "time the Ray Data featurization against a plain librosa loop and a one-process-per-core floor"
DEFAULT_OUT = Path("results/bench_featurize.md")
DEMO_ROOT = Path("results/cache/bench_demo")
FLOOR_FILES_PER_TASK = 4  # small tasks so that neither process idles at the end
STARTUP_TARGET_S = 5.0  # issue 16: from the command to the features, at most this beyond the work


def bench_settings(**overrides: Any) -> FeatureSettings:
    """The features the source projects used, with any field overridden (tests use tiny ones)."""
    from genre_ray.features import FeatureSettings

    base: dict[str, Any] = {"kinds": ("logmel", "mfcc", "chroma"), "sample_rate": 22050,
                            "clip_seconds": 3.0, "clip_overlap": 0.0, "n_fft": 2048, "hop_length": 512,
                            "n_mels": 128, "n_mfcc": 20, "n_chroma": 12, "max_clips_per_song": None}
    return FeatureSettings(**{**base, **overrides})


@dataclass
class Startup:
    """One command's start-up, timed from the outside (see the module's Start-up).

    ``runs`` are the seconds from just before the process started to its features; ``phases`` the
    median run's split (python and imports, Ray, the featurize call); ``work`` the featurizing
    itself (filled in once the timed runs are done).
    """

    session: str  # "cold" or "warm"
    before: str  # what the command does before featurizing
    method: str  # "pipeline" or "Ray Data"
    in_process: bool
    runs: list[float]
    phases: dict[str, float]
    work: float = float("nan")

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def beyond(self) -> float:
        """Seconds beyond the featurizing itself: the start-up the target is about."""
        return self.seconds - self.work


@dataclass
class BenchResult:
    """The timings on one collection."""

    pipeline: Timing
    sequential: Timing
    floor: Timing
    songs: int
    clips: int
    cores: int
    collection: str
    load: float = float("nan")  # 1-min load average before the run
    ray_data: Timing | None = None  # the pipeline with in_process=False
    startup: list[Startup] = field(default_factory=list)
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
                 batch_files: int, in_process: bool | None = None) -> tuple[float, Any]:
    """One timed :func:`genre_ray.features.pipeline.featurize` on a new, empty cache folder, hashing included.

    In this process, the seconds inside :func:`~genre_ray.features.pipeline.featurize_batch` (decoding
    and features) are measured from the outside and put in the table's ``info`` as ``featurize_s``.

    Returns:
        Seconds and the :class:`~genre_ray.features.pipeline.FeatureTable`.
    """
    from genre_ray.features import pipeline

    files = manifest["path"].nunique()
    here = in_process if in_process is not None else files <= pipeline.IN_PROCESS_MAX_FILES
    spent: list[float] = []
    with tempfile.TemporaryDirectory(prefix=".bench-cold-", dir=cache_root) as cold, contextlib.ExitStack() as stack:
        if here:  # never around a Ray Data pass, which would ship the wrapper to its tasks
            spent = stack.enter_context(_timed_batches())
        t0 = time.perf_counter()
        table = pipeline.featurize(manifest[["path"]], settings, cold, batch_files=batch_files,
                                   in_process=in_process)
        seconds = time.perf_counter() - t0
    if here and table.info.get("in_process"):
        table.info["featurize_s"] = sum(spent)
    return seconds, table


@contextlib.contextmanager
def _timed_batches() -> Iterator[list[float]]:
    """While the block runs, :func:`genre_ray.features.pipeline.featurize_batch` is wrapped in a timer
    (in this process only: the pass in the calling process looks it up by name); the list yielded
    gets the seconds of every call."""
    from genre_ray.features import pipeline

    original, spent = pipeline.featurize_batch, []

    def timed(batch: dict[str, np.ndarray], settings: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return original(batch, settings)
        finally:
            spent.append(time.perf_counter() - t0)

    pipeline.featurize_batch = timed
    try:
        yield spent
    finally:
        pipeline.featurize_batch = original


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


#: The Start-up section's rows: (Ray session, what the command does with Ray first, in_process).
STARTUP_ROWS: tuple[tuple[str, str | None, bool | None], ...] = (
    ("cold", None, None), ("cold", "start", None), ("cold", "start", False),
    ("warm", "join", None), ("warm", "join", False))


def _startup_once(paths: list[str], settings: FeatureSettings, cache_root: Path, batch_files: int,
                  session: str, ray: str | None, in_process: bool | None, cpus: int,
                  address: str | None) -> tuple[float, dict[str, float], bool]:
    """One fresh process (:mod:`genre_ray.bench._startup`) on an empty cache: the seconds from just
    before it starts to its features, their split, and whether it featurized in process."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if session == "cold":  # no Ray for it to join: a Ray it starts is a new local one
        env.update(RAY_ADDRESS="local", RAY_AUTH_MODE=env.get("RAY_AUTH_MODE", "disabled"))
    with tempfile.TemporaryDirectory(prefix=".bench-startup-", dir=cache_root) as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"paths": paths, "settings": settings.as_dict(), "cache": str(Path(tmp) / "c"),
                                    "batch_files": batch_files, "in_process": in_process, "ray": ray,
                                    "address": address, "cpus": cpus}))
        t0 = time.time()
        done = subprocess.run([sys.executable, "-m", "genre_ray.bench._startup", str(spec)], env=env,
                              capture_output=True, text=True, timeout=900, check=False)
    if done.returncode:
        raise RuntimeError(f"the start-up run failed ({done.returncode}): {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    t = out["times"]
    phases = {"imports": t["imported"] - t0, "ray": t["ray"] - t["imported"], "featurize": t["featurized"] - t["ray"]}
    return t["featurized"] - t0, phases, bool(out["in_process"])


def time_startups(paths: list[str], settings: FeatureSettings, cache_root: Path, batch_files: int,
                  rows: tuple[tuple[str, str | None, bool | None], ...] = STARTUP_ROWS, *, cpus: int,
                  address: str | None = None, runs: int = 1, warm_up: bool = True) -> list[Startup]:
    """Time each row's command ``runs`` times, round by round (every row once per round, so that a
    slow spell of the machine hits them alike), after one untimed run that loads the libraries into
    the OS file cache (as the audio files are, for every method).

    Args:
        rows: ``(session, ray, in_process)``: ``session`` is ``cold`` (no Ray for the command to join)
            or ``warm`` (the Ray session at ``address`` runs); ``ray`` what the command does first:
            nothing (None), ``start`` a local Ray of ``cpus`` CPUs, or ``join`` the one at
            ``address``; ``in_process`` the pipeline's (None: it decides).
    """
    before = {None: "featurize", "start": "ray.init, then featurize", "join": "join Ray, then featurize"}
    out = [Startup(session, before[ray], "pipeline" if here is None else "Ray Data", bool(here), [], {})
           for session, ray, here in rows]
    if warm_up:
        _startup_once(paths, settings, cache_root, batch_files, "cold", None, None, cpus, None)
    splits: list[list[tuple[float, dict[str, float]]]] = [[] for _ in rows]
    for _ in range(runs):
        for row, split, (session, ray, here) in zip(out, splits, rows, strict=True):
            seconds, phases, row.in_process = _startup_once(paths, settings, cache_root, batch_files, session, ray,
                                                            here, cpus, address)
            row.runs.append(seconds)
            split.append((seconds, phases))
    for row, split in zip(out, splits, strict=True):
        row.phases = sorted(split, key=lambda sp: sp[0])[len(split) // 2][1]  # the median run's split
    return out


def run_featurize_bench(root: str | os.PathLike[str], *, songs: int | None = None, seq_songs: int | None = 20,
                        cpus: int | None = None, repeats: int = 5, batch_files: int = 8,
                        cache_root: str | os.PathLike[str] = "results/cache",
                        settings: FeatureSettings | None = None, keep_features: bool = False,
                        startup_runs: int = 0) -> BenchResult:
    """Time the methods on the songs of the collection at ``root``.

    Args:
        root: a folder-per-genre collection.
        songs: use this many songs, spread evenly over the collection (default: all).
        seq_songs: time the sequential loop on this many of them (None or 0: all).
        cpus: CPUs for Ray and processes for the floor (default: every core).
        repeats: timed runs of the pipeline (both ways) and the floor; the median counts.
        batch_files: the pipeline's files per task (the search's ``features.batch_files``).
        cache_root: where the pipeline's temporary cold caches are made.
        settings: the features (default: :func:`bench_settings`).
        keep_features: also return every method's features (to check that they agree).
        startup_runs: fresh processes per start-up row (0: no Start-up section). The cold rows run
            before this process starts Ray, the warm ones join its session once its workers are warm.

    Returns:
        The :class:`BenchResult`.
    """
    from genre_ray.data.collection import folder_manifest

    settings, cache, load_start = settings or bench_settings(), Path(cache_root), load_average()
    cache.mkdir(parents=True, exist_ok=True)
    cores = cpus or os.cpu_count() or 1
    manifest, _ = folder_manifest(Path(root))
    manifest = manifest.iloc[_evenly(len(manifest), songs)].reset_index(drop=True)
    for path in manifest["path"]:  # the OS file cache is warm for every method alike
        Path(path).read_bytes()
    files = manifest["path"].tolist()
    cold = tuple(r for r in STARTUP_ROWS if r[0] == "cold")
    startups: list[Startup] = []
    if startup_runs:  # before this process starts Ray (unless a caller's runs already)
        startups = time_startups(files, settings, cache, batch_files, cold, cpus=cores, runs=startup_runs)
    start = start_ray(manifest, settings, cores, cache)
    if startup_runs:
        import ray

        startups += time_startups(files, settings, cache, batch_files, tuple(r for r in STARTUP_ROWS if r not in cold),
                                  cpus=cores, runs=startup_runs, address=ray.get_runtime_context().gcs_address,
                                  warm_up=False)
    pipe, ray_data, floor, table, paths, floor_features = _timed_methods(manifest, settings, cache, batch_files,
                                                                         repeats, start)
    for row in startups:
        row.work = (pipe if row.method == "pipeline" else ray_data).seconds
    seq_paths = [paths[i] for i in _evenly(len(paths), seq_songs)]
    seq, seq_features = time_sequential(seq_paths, settings)
    if len(seq_paths) < len(paths):
        seq.note = f"timed on {len(seq_paths)} of {len(paths)} songs; clips/s extrapolated to all"
    result = BenchResult(pipe, seq, floor, len(paths), pipe.clips, start["cores"], str(Path(root).resolve()),
                         load_start, ray_data, startups)
    if keep_features:
        result.features = {"pipeline": (paths, features_in_file_order(table, paths)),
                           "floor": (paths, floor_features), "sequential": (seq_paths, seq_features)}
    return result


def _timed_methods(manifest: pd.DataFrame, settings: FeatureSettings, cache: Path, batch_files: int,
                   repeats: int, start: dict[str, Any]) -> tuple[Timing, Timing, Timing, Any, list[str], dict]:
    """The pipeline (as it decides, then with Ray Data) and the floor, run after run in turn, so that a
    busy spell on the machine hits all of them alike."""
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {"pipeline": [], "ray_data": []}
    floor_runs: list[float] = []
    table = None
    paths: list[str] = []
    with FloorPool(settings, start["cores"]) as pool:
        for _ in range(repeats):
            for name, in_process in (("pipeline", None), ("ray_data", False)):
                seconds, out = run_pipeline(manifest, settings, cache, batch_files, in_process)
                runs[name].append((seconds, out.info))
                if table is None:
                    table = out
                    bad = set(table.skipped["path"])
                    paths = [p for p in manifest["path"] if p not in bad]  # the floor skips what the pipeline did
            floor_seconds, features = pool.run(paths)
            floor_runs.append(floor_seconds)
    assert table is not None
    timings = {}
    for name, done in runs.items():
        times = [s for s, _ in done]
        info = done[int(np.argsort(times)[len(times) // 2])][1]  # the median run's breakdown
        timings[name] = Timing(name, len(manifest), len(table.clips), times, 0.0, info={**start, **info})
    pipe, ray_data = timings["pipeline"], timings["ray_data"]
    pipe.method, ray_data.method = "pipeline", "pipeline, Ray Data"
    here = "in this process" if pipe.info.get("in_process") else "Ray Data tasks"
    pipe.note = f"cold cache; {here} (at most {_max_in_process()} files go in-process); {pipe.runs_text()}"
    ray_data.startup_s = start["ray_init_s"] + start["warm_s"]
    ray_data.note = (f"cold cache; in_process=False; start-up = ray.init {start['ray_init_s']:.2f} s + worker "
                     f"warm-up {start['warm_s']:.2f} s; {ray_data.runs_text()}")
    floor = Timing("floor", len(paths), len(next(iter(features.values()))), floor_runs, pool.startup_s,
                   f"{start['cores']} processes, {FLOOR_FILES_PER_TASK} files per task; "
                   f"{Timing('', 0, 0, floor_runs, 0.0).runs_text()}")
    return pipe, ray_data, floor, table, paths, features


def _max_in_process() -> int:
    from genre_ray.features.pipeline import IN_PROCESS_MAX_FILES

    return IN_PROCESS_MAX_FILES


def _breakdown(r: BenchResult) -> list[dict[str, Any]]:
    """Where each way's median run went."""
    rows = []
    for t in (r.pipeline, r.ray_data):
        if t is None:
            continue
        i = t.info
        parts = [("content hashing (driver)", i.get("hash_s", 0.0))]
        if i.get("in_process"):
            parts.append(("the pass in this process", i.get("compute_s", 0.0)))
            if "featurize_s" in i:
                parts += [("  of which decode + features (featurize_batch)", i["featurize_s"]),
                          ("  of which the Parquet write and the rest", i.get("compute_s", 0.0) - i["featurize_s"])]
        else:
            parts.append((f"the Ray Data run ({i.get('tasks')} tasks, with their scheduling)", i.get("compute_s", 0.0)))
        parts.append(("Parquet cache read back (driver)", i.get("load_s", 0.0)))
        rows += [{"method": t.method, "part": k, "seconds": round(v, 3), "share": f"{v / t.seconds:.0%}"}
                 for k, v in parts]
    return rows


def _startup_rows(r: BenchResult) -> list[dict[str, Any]]:
    return [{"session": s.session, "before": s.before, "method": s.method,
             "path": "in this process" if s.in_process else "Ray Data tasks", "seconds": round(s.seconds, 2),
             "imports": round(s.phases["imports"], 2), "ray": round(s.phases["ray"], 2),
             "featurize": round(s.phases["featurize"], 2), "work": round(s.work, 2), "beyond": round(s.beyond, 2),
             "met": "yes" if s.beyond <= STARTUP_TARGET_S else "no", "runs": len(s.runs),
             "runs_s": " ".join(f"{x:.2f}" for x in s.runs)} for s in r.startup]


def _startup_section(r: BenchResult) -> tuple[str, str]:
    columns = {"session": "Ray session", "before": "the command", "path": "featurized in",
               "seconds": "command to features, s", "imports": "of which Python + imports",
               "ray": "of which Ray", "featurize": "of which the featurize call",
               "work": "the featurizing itself, s", "beyond": "start-up beyond it, s",
               "met": f"<= {STARTUP_TARGET_S:g} s", "runs_s": "runs (s)"}
    n = max((len(s.runs) for s in r.startup), default=0)
    text = (markdown_table(_startup_rows(r), columns) + "\n\n"
            f"Each row is a fresh Python process (`python -m genre_ray.bench._startup`), median of {n} "
            "run(s), timed from just before it starts to its features returned: an upper bound on its "
            "first featurized batch. \"The featurizing itself\" is the median timed run of the same "
            "method in this process, once warm (the Throughput table). Cold rows ran before this benchmark "
            "started its Ray, with none to join (RAY_ADDRESS=local), each starting its own where the row "
            "says so; warm rows join this benchmark's Ray session after its workers have featurized. Within "
            "each, the rows alternate round by round, after one untimed run that loads the libraries into "
            "the OS file cache. `genre-ray search` on one machine "
            "featurizes before it starts Ray (the \"featurize\" row; a small collection in process); on a "
            "cluster (RAY_ADDRESS), or asking for a GPU or more CPUs than the machine has, it starts or joins "
            "Ray first: the \"ray.init\" and \"join\" rows.")
    return "Start-up: from the command to the features", text


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
    methods = [t for t in (r.pipeline, r.ray_data, r.sequential, r.floor) if t is not None]
    rows = [{"method": t.method, "songs": t.songs, "clips": t.clips, "seconds": round(t.seconds, 3),
             "clips_per_s": round(t.clips_per_s, 1), "startup_s": round(t.startup_s, 2),
             "pipeline_over_this": round(r.pipeline.clips_per_s / t.clips_per_s, 3), "runs": len(t.runs),
             "note": t.note} for t in methods]
    columns = {"method": "method", "songs": "songs timed", "clips": "clips timed", "seconds": "seconds",
               "clips_per_s": "clips/s", "startup_s": "start-up s (not counted)",
               "pipeline_over_this": "pipeline ÷ this", "note": "note"}
    targets = [{"ratio": "pipeline / sequential", "value": f"{r.over_sequential:.1f}x", "target": ">= 10x",
                "met": "yes" if r.over_sequential >= 10 else "no"},
               {"ratio": "pipeline / floor", "value": f"{r.over_floor:.2f}", "target": ">= 0.5",
                "met": "yes" if r.over_floor >= 0.5 else "no"}]
    if r.ray_data is not None:
        over = r.ray_data.clips_per_s / r.floor.clips_per_s
        targets.append({"ratio": "pipeline, Ray Data / floor", "value": f"{over:.2f}", "target": ">= 0.5",
                        "met": "yes" if over >= 0.5 else "no"})
    targets.append({"ratio": "floor / sequential (the most the first ratio could be)", "target": "", "met": "",
                    "value": f"{r.floor.clips_per_s / r.sequential.clips_per_s:.1f}x"})
    for st in r.startup:
        targets.append({"ratio": f"start-up beyond the work, {st.session} Ray session, {st.before} ({st.method})",
                        "value": f"{st.beyond:.2f} s", "target": f"<= {STARTUP_TARGET_S:g} s",
                        "met": "yes" if st.beyond <= STARTUP_TARGET_S else "no"})
    sections = [
        ("Throughput", markdown_table(rows, columns)),
        ("Targets", markdown_table(targets, {"ratio": "ratio of clips/s, or start-up", "value": "measured",
                                             "target": "target", "met": "met"})),
        *([_startup_section(r)] if r.startup else []),
        ("Where the time went (median runs)", markdown_table(
            _breakdown(r), {"method": "method", "part": "part", "seconds": "seconds", "share": "share"})),
        ("Methods", "```\n" + (__doc__ or "").strip() + "\n```\n\nThe OS file cache is warmed for all files "
         "before any timing. Decode + features in this process is measured by wrapping featurize_batch."),
    ]
    if r.memory:
        from genre_ray.bench.memory import memory_section

        sections.insert(len(sections) - 1, memory_section(r.memory))
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
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs of the pipeline (as it "
                   "decides, and with Ray Data) and of the floor, alternating; the median is reported (default: 5)")
    p.add_argument("--batch-files", type=int, default=8, metavar="N", help="the pipeline's files per Ray "
                   "Data task or batch, as features.batch_files of a search space (default: 8)")
    p.add_argument("--cache-dir", default="results/cache", metavar="DIR", help="where the pipeline's "
                   "temporary, always empty, feature caches are made and removed (default: results/cache)")
    p.add_argument("--memory-sizes", default="100,400", metavar="N,M", help="the Peak memory section: one "
                   "cold-cache pipeline run per number of songs, taken from the collection, or from a demo "
                   f"collection of {DEMO_SPEC.seconds:g}-s songs generated once under {DEMO_ROOT.parent} "
                   "where the collection has fewer; 0 skips the section (default: 100,400)")
    p.add_argument("--startup-runs", type=int, default=3, metavar="N", help="the Start-up section: fresh "
                   "processes timed from their start to their features, per row (cold and warm Ray session, "
                   "in-process and Ray Data); the median is reported; 0 skips the section (default: 3)")


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
                                     cache_root=args.cache_dir, settings=settings,
                                     startup_runs=args.startup_runs)
        result.memory = _memory_rows(root, args, settings)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    md, path_csv = report(result, args.out, command_line(getattr(args, "argv", None)), settings)
    print(md.read_text())
    print(f"wrote {md} and {path_csv}")
    return 0
