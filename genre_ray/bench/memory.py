"""Peak memory of the featurization pipeline at two (or more) collection sizes.

Each size gets one run of :func:`genre_ray.features.pipeline.featurize` on a fresh, empty cache folder
(cold cache) in the running Ray session. Memory is read from Linux's ``/proc``:

- Ray worker processes: the children of this session's raylet (found by its socket name). Just
  before the run, each one's peak RSS (``VmHWM``) is reset by writing ``5`` to
  ``/proc/<pid>/clear_refs``; a thread then reads ``VmHWM`` and ``VmRSS`` of every worker every
  50 ms until the run ends. "Per-worker peak" is the largest ``VmHWM`` (exact, not sampled);
  "all workers" is the largest sampled sum of ``VmRSS``.
- The driver (this process): ``VmHWM`` reset the same way, minus ``VmRSS`` before the run.

RSS counts shared pages too (libraries, Ray's object store pages that a process touched), so the
idle RSS of the workers before the run is reported beside their peak.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from genre_ray.bench import markdown_table
from genre_ray.data.demo import DemoSpec

if TYPE_CHECKING:
    import pandas as pd

    from genre_ray.features import FeatureSettings

__all__ = ["MemoryRow", "PeakSampler", "memory_section", "parse_sizes", "ray_worker_pids", "run_memory_bench"]

MB = 2**20


@dataclass
class MemoryRow:
    """One collection size: what the whole collection would weigh decoded, and what was held."""

    songs: int
    clips: int
    audio_seconds: float  # summed over the songs
    sample_rate: int
    feature_bytes: int  # the features the driver holds at the end
    worker_idle_bytes: int  # largest worker RSS just before the run
    worker_peak_bytes: int  # largest worker VmHWM during the run
    workers_total_peak_bytes: int  # largest sampled sum of the workers' RSS
    workers: int
    driver_growth_bytes: int  # driver VmHWM during the run minus its RSS before
    seconds: float
    tasks: int
    batch_files: int
    collection: str = ""

    @property
    def decoded_bytes(self) -> int:
        """Decoded float32 audio of every song, were it all held at once."""
        return int(self.audio_seconds * self.sample_rate * 4)


def parse_sizes(text: str | None) -> list[int]:
    """``"100,400"`` -> ``[100, 400]``; ``"0"``, ``""`` or None -> ``[]`` (skip the section)."""
    sizes = [int(x) for x in (text or "").replace(" ", "").split(",") if x]
    if any(s < 0 for s in sizes):
        raise ValueError(f"memory sizes must be >= 0, got {text!r}")
    return [] if not any(sizes) else [s for s in sizes if s > 0]


def _status(pid: int | str) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process in bytes (empty if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _reset_peak(pid: int | str) -> bool:
    """Reset a process's ``VmHWM`` to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _ppid(pid: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return -1


def raylet_socket() -> str:
    """The socket of this node's raylet in the running Ray session, from Ray's public node table
    (``ray.nodes()``, the entry of this driver's node)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    return next(str(n["RayletSocketName"]) for n in ray.nodes() if n["NodeID"] == here)


def ray_worker_pids() -> list[int]:
    """Process ids of this Ray session's worker processes: the children of its raylet."""
    socket = raylet_socket()
    raylets, children = set(), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if cmd and cmd[0].endswith(b"raylet") and f"--raylet_socket_name={socket}".encode() in cmd:
                raylets.add(int(pid))
            elif cmd and cmd[0].startswith(b"ray::"):
                children[int(pid)] = _ppid(pid)
        except (OSError, ValueError):
            continue
    return sorted(pid for pid, parent in children.items() if parent in raylets)


@dataclass
class PeakSampler:
    """Peak RSS of the Ray workers and of the driver while the ``with`` block runs."""

    interval_s: float = 0.05
    idle: int = 0
    peaks: dict[int, int] = field(default_factory=dict)
    total_peak: int = 0
    driver_before: int = 0
    driver_growth: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _poll(self) -> None:
        pids = ray_worker_pids()
        for pid in pids:
            if pid not in self.peaks:  # a worker started during the run: its peak is all in the run
                self.peaks[pid] = 0
        stats = {pid: _status(pid) for pid in pids}
        for pid, st in stats.items():
            self.peaks[pid] = max(self.peaks[pid], st.get("VmHWM", 0))
        self.total_peak = max(self.total_peak, sum(st.get("VmRSS", 0) for st in stats.values()))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll()

    def __enter__(self) -> PeakSampler:
        gc.collect()
        for pid in ray_worker_pids():
            self.idle = max(self.idle, _status(pid).get("VmRSS", 0))
            _reset_peak(pid)
            self.peaks[pid] = 0
        self.driver_before = _status("self").get("VmRSS", 0)
        _reset_peak("self")
        self._thread = threading.Thread(target=self._loop, name="peak-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver_growth = _status("self").get("VmHWM", 0) - self.driver_before
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._poll()


def _audio_seconds(paths: list[str]) -> float:
    import soundfile as sf

    return float(sum(sf.info(p).duration for p in paths))


def memory_run(manifest: pd.DataFrame, settings: FeatureSettings, cache_root: Path, batch_files: int,
               collection: str = "") -> MemoryRow:
    """One cold-cache :func:`~genre_ray.features.pipeline.featurize` of ``manifest`` in Ray Data tasks
    (``in_process=False``, whatever its size) with the peak memory of the workers and the driver."""
    from genre_ray.features.pipeline import featurize

    paths = manifest["path"].tolist()
    with tempfile.TemporaryDirectory(prefix=".bench-mem-", dir=cache_root) as cold:
        t0 = time.perf_counter()
        with PeakSampler() as peak:
            table = featurize(manifest[["path"]], settings, cold, batch_files=batch_files, in_process=False)
        seconds = time.perf_counter() - t0
    row = MemoryRow(len(paths), len(table.clips), _audio_seconds(paths), settings.sample_rate,
                    sum(a.nbytes for a in table.features.values()), peak.idle,
                    max(peak.peaks.values(), default=0), peak.total_peak, len(peak.peaks), peak.driver_growth,
                    seconds, int(table.info.get("tasks", 0)), batch_files, collection)
    del table
    gc.collect()
    return row


def _collection_of(size: int, root: Path, demo_spec: DemoSpec, demo_dir: Path) -> tuple[pd.DataFrame, str]:
    """``size`` songs spread evenly over ``root``; or, when it has fewer, over a demo collection."""
    import numpy as np

    from genre_ray.data.collection import folder_manifest
    from genre_ray.data.demo import ensure_demo_collection

    manifest, _ = folder_manifest(root)
    if len(manifest) < size:
        per_genre = math.ceil(size / demo_spec.genres)
        root = ensure_demo_collection(demo_dir / f"bench_demo_{per_genre * demo_spec.genres}",
                                      replace(demo_spec, songs_per_genre=per_genre))
        manifest, _ = folder_manifest(root)
    pick = np.unique(np.linspace(0, len(manifest) - 1, size).round().astype(int))
    return manifest.iloc[pick].reset_index(drop=True), str(root)


def run_memory_bench(root: str | os.PathLike[str], sizes: list[int], settings: FeatureSettings, *,
                     cache_root: str | os.PathLike[str] = "results/cache", batch_files: int = 8,
                     cpus: int | None = None, demo_spec: DemoSpec | None = None,
                     demo_dir: str | os.PathLike[str] = "results/cache") -> list[MemoryRow]:
    """Peak memory of one cold-cache pipeline run per size, smallest first.

    Args:
        root: the benchmark's collection; a size larger than it is taken from a demo collection
            of ``demo_spec``'s songs (more songs per genre), generated once under ``demo_dir``.
        sizes: numbers of songs.
        settings: the features.
        cache_root: where the temporary cold caches are made.
        batch_files: the pipeline's files per task.
        cpus: CPUs for Ray if it is not running yet.
        demo_spec: the demo songs (default: the benchmark's, 30 s).

    Returns:
        One :class:`MemoryRow` per size.
    """
    from genre_ray.bench._warm import DEMO_SPEC, start_ray

    cache = Path(cache_root)
    picked = [_collection_of(n, Path(root), demo_spec or DEMO_SPEC, Path(demo_dir)) for n in sorted(sizes)]
    start_ray(picked[0][0], settings, cpus or os.cpu_count() or 1, cache)  # workers up and warm
    return [memory_run(manifest, settings, cache, batch_files, where) for manifest, where in picked]


def _mb(n: float) -> str:
    return f"{n / MB:,.0f}" if n >= 10 * MB else f"{n / MB:.1f}"


def memory_section(rows: list[MemoryRow]) -> tuple[str, str]:
    """The report's "Peak memory" heading and body (table and the note that reads it)."""
    table = [{"songs": r.songs, "clips": r.clips, "audio": f"{r.audio_seconds / r.songs:.0f} s",
              "decoded": _mb(r.decoded_bytes), "features": _mb(r.feature_bytes), "tasks": r.tasks,
              "idle": _mb(r.worker_idle_bytes), "peak": _mb(r.worker_peak_bytes),
              "growth": _mb(r.worker_peak_bytes - r.worker_idle_bytes),
              "total": f"{_mb(r.workers_total_peak_bytes)} ({r.workers})",
              "driver": _mb(r.driver_growth_bytes), "seconds": round(r.seconds, 1)} for r in rows]
    columns = {"songs": "songs", "clips": "clips", "audio": "per song", "tasks": "Ray tasks",
               "decoded": "all audio decoded, MB", "features": "features held by driver, MB",
               "idle": "worker RSS before, MB", "peak": "worker peak RSS, MB",
               "growth": "worker peak − before, MB", "total": "all workers peak RSS, MB (workers)",
               "driver": "driver peak RSS growth, MB", "seconds": "run s"}
    return "Peak memory", markdown_table(table, columns) + "\n\n" + _memory_note(rows)


def _memory_note(rows: list[MemoryRow]) -> str:
    lo, hi = rows[0], rows[-1]
    where = sorted({r.collection for r in rows if r.collection})
    text = (f"One cold-cache pipeline run per size, at most {lo.batch_files} files per Ray task, in the same "
            "Ray session, smallest size first. \"All audio decoded\" is songs × seconds × sample rate × 4 "
            "bytes: what holding the whole collection's float32 audio at once would take. ")
    if len(rows) > 1:
        text += (f"From {lo.songs} to {hi.songs} songs ({hi.songs / lo.songs:.1f}x), the decoded audio grows "
                 f"from {_mb(lo.decoded_bytes)} to {_mb(hi.decoded_bytes)} MB while the largest worker's "
                 f"peak RSS goes from {_mb(lo.worker_peak_bytes)} to {_mb(hi.worker_peak_bytes)} MB: a task "
                 "decodes only its own files, clip by clip, and its memory is bounded by that batch, not by "
                 "the collection. The driver's peak grows with the features it ends up holding (from "
                 f"{_mb(lo.driver_growth_bytes)} to {_mb(hi.driver_growth_bytes)} MB, about "
                 f"{hi.driver_growth_bytes / max(hi.feature_bytes, 1):.1f}x the features while the Parquet "
                 "cache is read back): that is expected, the features are loaded once and shared by every "
                 "trial. ")
    text += ("Memory is read from /proc: each worker's VmHWM (reset through /proc/<pid>/clear_refs just "
             "before the run) and, every 50 ms, the sum of the workers' VmRSS; for the driver, VmHWM "
             "minus VmRSS before the run. RSS includes shared pages (libraries, object store); a worker's "
             "RSS before the run is mostly its libraries (torch, Ray, librosa) plus memory its allocator "
             "kept from earlier runs in this session, so the peak, not the difference, is the ceiling. "
             "Collections: " + ", ".join(where) + ".")
    return text
