"""The Ray Data featurization pipeline and its Parquet feature cache.

Files are read in parallel Ray tasks: decode to mono, resample, cut into clips, and compute
every feature of a batch of files from one STFT (:func:`genre_ray.features.compute_features`).
A small collection (at most :data:`IN_PROCESS_MAX_FILES` files, and with a pretrained network at
most :data:`IN_PROCESS_MAX_PATCHES` of its 3-s patches) is featurized in the calling process
instead, by the same :func:`featurize_batch` with one torch thread as each Ray task has, into the
same cache: starting Ray's workers, each importing torch and librosa, would take several times
longer than the work (measured: 8 to 15 s of start-up for under a second of featurizing 30 songs on
2 cores). Both ways write the same cache rows, bit for bit.
The result is written as Parquet under ``<cache_dir>/<key>/``, where the key hashes the
*content* of every audio file together with every feature setting. The cache may be a local or
network folder or a URI (``s3://``, ``gs://``...). Each pass writes into a fresh run folder and
then publishes the entry with a completion marker, written last and whole, so an interrupted
run never leaves a cache that a later run would trust (:class:`_Store`).

Each clip's feature of one kind is stored as one ``fixed_size_binary`` value: the raw
little-endian float32 bytes of its ``(bins, frames)`` array, uncompressed. Loading gives back
exactly the float32 values that were computed. This layout is several times faster to write and
read than Parquet lists of floats (which pay per-element level encoding) and compression gains
nothing on spectra (measured: 10.8 MB either way for 130 clips).

A pass shows its progress in files (:class:`Progress`): a bar on a terminal, a log line every few
seconds otherwise. Ray Data's own bars stay off (:func:`ray_data_progress_off`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from genre_ray import storage
from genre_ray._faults import pause_point
from genre_ray._ray_workarounds import quiet_progress_notice
from genre_ray.data.audio import AudioError, decode_clips, n_clips
from genre_ray.data.collection import SKIPPED_COLUMNS, decode_report
from genre_ray.features import FeatureSettings, compute_features
from genre_ray.features.pretrained import MIN_CLIP_SECONDS
from genre_ray.features.spectral import PRETRAINED_KINDS

__all__ = ["CACHE_VERSION", "IN_PROCESS_MAX_FILES", "IN_PROCESS_MAX_PATCHES", "KIND_VERSIONS", "PROGRESS_EVERY_S",
           "FeatureTable", "Progress", "cache_key", "clip_features", "content_hashes", "featurize", "featurize_batch",
           "pretrained_patches", "ray_data_progress_off"]

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: features as raw float32 bytes (fixed_size_binary), uncompressed
#: Kinds whose values changed since :data:`CACHE_VERSION` was last raised; their cache keys carry
#: this, so that only their entries are computed again. Pretrained kinds, 2: the zero padding of a
#: song shorter than a clip is no longer pooled into its embedding.
KIND_VERSIONS: dict[str, int] = {kind: 2 for kind in PRETRAINED_KINDS}
_COMPLETE = "_genre_ray_cache.json"
# Clips per STFT call. Measured on 2 cores, n_fft 2048, 128 mels: 2-4 clips ~1050 clips/s,
# 16 clips ~750 clips/s (larger batches fall out of the CPU cache).
_CHUNK = 4
# Dictionary encoding is pyarrow's default: on the feature columns it hashes every value and
# gives up, costing 2-5x the write time. Statistics of raw bytes are useless for pruning.
_PARQUET_ARGS: dict[str, Any] = {"compression": "none", "use_dictionary": False, "write_statistics": False}
_META = ["sha", "clip", "start_s", "error"]
#: Seconds between two progress lines when the console is not a terminal (CI logs, pipes, files).
PROGRESS_EVERY_S = 5.0
#: Collections of at most this many files (without a pretrained kind) are featurized in the calling
#: process, not in Ray tasks. Measured on 2 cores: 30 songs of 30 s take 0.3 to 0.6 s there against
#: 8 to 15 s for Ray's workers to start; 104 songs take about as long either way once Ray's workers
#: run. With many cores Ray wins only when the work outlasts its start-up, and 256 songs of 30 s are
#: about 5 s of work in one process.
IN_PROCESS_MAX_FILES = 256
#: ... and with a pretrained kind, at most this many 3-s patches to run through the networks (per
#: network, summed): about 12 s of one thread for musicnn (41 ms a patch; the VGG networks 2-3 times
#: that), against 10 to 15 s for a pool of Ray actors to start, each importing torch and loading the
#: networks (measured on 2 cores: 15 songs of 4 s with three networks, 45 patches, took 5.2 s here
#: and 18.7 s with Ray Data's actors).
IN_PROCESS_MAX_PATCHES = 300


@dataclass
class FeatureTable:
    """Clip features of a collection, aligned row by row with ``clips``."""

    features: dict[str, np.ndarray]  # kind -> (n_clips, bins, frames) float32
    clips: pd.DataFrame  # sha, clip, start_s (+ song columns once joined)
    skipped: pd.DataFrame  # path, stage, reason, detail
    cache_path: str
    cache_hit: bool
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Progress:
    """How far a pass over many files has got, for whoever watches the console.

    On a terminal (``stream`` is a TTY) it is a tqdm bar with the count, the rate and the time left.
    Otherwise (CI logs, pipes, files) it is one log line every :data:`PROGRESS_EVERY_S` seconds and
    one at the end, so the log stays readable. It shows nothing when ``logger`` does not log INFO,
    so a command's ``-q`` (its log at WARNING) silences it too. Use it as a context manager, or call
    :meth:`close`.

    Args:
        what: what the pass does, as its lines begin (``featurizing``).
        total: the number of items of the pass.
        unit: what the items are, plural (``files``).
        logger: where the lines go; it decides whether anything is shown.
        stream: the console a bar would draw on (default ``sys.stderr``).
    """

    def __init__(self, what: str, total: int, unit: str = "files", *, logger: logging.Logger | None = None,
                 stream: Any = None) -> None:
        self.what, self.total, self.unit = what, max(0, int(total)), unit
        self.log = logger or log
        self.enabled = self.log.isEnabledFor(logging.INFO)
        self.done = 0
        self.started = self._logged = time.monotonic()
        self.bar: Any = None
        stream = sys.stderr if stream is None else stream
        if self.enabled and getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=what, unit=f" {unit}", file=stream, dynamic_ncols=True)

    def update(self, done: int) -> None:
        """Set how many items are done (a count that never goes down, nor past the total)."""
        done = min(self.total, max(self.done, int(done)))
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if self.enabled and self.bar is None and time.monotonic() - self._logged >= PROGRESS_EVERY_S:
            self._logged = time.monotonic()
            self.log.info("%s", self.line())

    def line(self) -> str:
        """The log line: ``featurizing: 12/48 files (25%), 3.1 files/s, about 12 s left``."""
        share = 100 * self.done / max(1, self.total)
        text = f"{self.what}: {self.done}/{self.total} {self.unit} ({share:.0f}%)"
        seconds = time.monotonic() - self.started
        if self.done and seconds > 0:
            rate = self.done / seconds
            text += f", {rate:.3g} {self.unit}/s"
            if self.done < self.total:
                text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def close(self, finished: bool = True) -> None:
        """End the bar; in a log, say the count and the time when the pass ``finished``."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and finished:
            self.log.info("%s in %s", self.line(), _duration(time.monotonic() - self.started))
        self.enabled, self.bar = False, None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        self.close(finished=kind is None)


def _duration(seconds: float) -> str:
    """``4.2 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def ray_data_progress_off() -> None:
    """Turn off Ray Data's own progress bars and its console INFO lines, before a pass runs.

    The passes show :class:`Progress` instead: Ray Data's bars count an operator's output rows, and
    for featurizing (decoding, features and the Parquet write fused into one operator) that is one
    row per task, with no total until the end, so they can show neither a count of files nor a time
    left. Ray Data then logs, once per process, that its bars are off ("Progress bars disabled..."),
    and at INFO, for each dataset, its plan and where its own log is kept: nothing a user of these
    commands acts on. Its warnings and errors still reach the console, and its INFO lines its log
    file (``logs/ray-data/ray-data.log`` of the Ray session).
    """
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    # After ray.data is imported: importing it configures its logger and handlers anew.
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console, not the file
            handler.setLevel(max(handler.level, logging.WARNING))
    quiet_progress_notice()


def _sha256(path: str) -> str:
    with storage.open_input(path) as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def content_hashes(paths: list[str], threads: int = 4) -> list[str]:
    """SHA-256 of each file's bytes: the audio's identity, independent of its name."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_sha256, paths))


def cache_key(hashes: list[str], settings: FeatureSettings) -> str:
    """The cache folder name: content of every file plus every feature setting."""
    doc: dict[str, Any] = {"v": CACHE_VERSION, "settings": settings.as_dict(), "files": sorted(set(hashes))}
    versions = {kind: KIND_VERSIONS[kind] for kind in settings.kinds if kind in KIND_VERSIONS}
    if versions:  # absent for the other kinds, whose keys stay as they were
        doc["kinds_v"] = versions
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def clip_features(clips: np.ndarray, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """:func:`~genre_ray.features.compute_features` over any number of clips, a few per STFT.

    Args:
        clips: ``(n_clips, clip_samples)`` float32 waveforms.
        settings: the features to compute.

    Returns:
        ``kind -> (n_clips, bins, frames)`` float32 arrays.
    """
    n = clips.shape[0]
    out = {k: np.empty((n, *settings.shape(k)), np.float32) for k in settings.kinds}
    for i in range(0, n, _CHUNK):
        for kind, arr in compute_features(clips[i:i + _CHUNK], settings).items():
            out[kind][i:i + _CHUNK] = arr
    return out


def _to_binary(arr: np.ndarray) -> pa.Array:
    """(n, ...) float32 -> n fixed-size binary values holding each row's raw bytes (no copy)."""
    arr = np.ascontiguousarray(arr, dtype="<f4")
    width = arr[0].nbytes if len(arr) else 4 * int(np.prod(arr.shape[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(arr), [None, pa.py_buffer(arr)])


def _from_binary(col: pa.ChunkedArray, rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rows ``rows`` of a fixed-size binary column as a new ``(len(rows), *shape)`` float32 array.

    When ``rows`` is every row in order (the usual case: files are written in hash order), the
    chunks are copied once into the result instead of being joined and then indexed: fresh
    memory is slow to touch on some VMs (measured 0.4 s for the two 69-MB copies, 0.04 s warm).
    """
    width = int(np.prod(shape))
    parts = [np.frombuffer(c.buffers()[1], "<f4", count=len(c) * width, offset=c.offset * width * 4)
             for c in col.chunks if len(c)]
    total = sum(len(p) for p in parts) // width
    if len(rows) == total and np.array_equal(rows, np.arange(total)):
        flat = np.concatenate(parts) if parts else np.empty(0, "<f4")
        return flat.reshape(-1, *shape).astype(np.float32, copy=False)
    flat = np.concatenate(parts) if parts else np.empty(0, "<f4")
    return flat.reshape(-1, *shape)[rows].astype(np.float32, copy=False)


def featurize_batch(batch: dict[str, np.ndarray], settings: dict[str, Any]) -> pa.Table:
    """Ray Data UDF: a batch of files -> one row per clip (or one error row per bad file)."""
    s = FeatureSettings(**{**settings, "kinds": tuple(settings["kinds"])})
    shas: list[str] = []
    clip_idx: list[int] = []
    starts: list[float] = []
    errors: list[str | None] = []
    waves: list[np.ndarray] = []
    hop = max(1, int(round(s.clip_samples * (1 - s.clip_overlap))))
    for path, sha in zip(batch["path"], batch["sha"], strict=True):
        try:
            clips = decode_clips(str(path), s.sample_rate, s.clip_samples, s.clip_overlap,
                                 s.max_clips_per_song)
        except AudioError as exc:
            shas.append(sha)
            clip_idx.append(-1)
            starts.append(0.0)
            errors.append(exc.record())
            waves.append(np.zeros((1, s.clip_samples), np.float32))
            continue
        n = clips.shape[0]
        shas += [sha] * n
        clip_idx += list(range(n))
        starts += [i * hop / s.sample_rate for i in range(n)]
        errors += [None] * n
        waves.append(clips)
    columns: dict[str, pa.Array] = {
        "sha": pa.array(shas, pa.string()),
        "clip": pa.array(clip_idx, pa.int32()),
        "start_s": pa.array(starts, pa.float32()),
        "error": pa.array(errors, pa.string()),
    }
    for kind, arr in clip_features(np.concatenate(waves), s).items():
        columns[kind] = _to_binary(arr)
    return pa.table(columns)


class PretrainedFeaturizer:
    """Ray Data actor UDF for settings with a pretrained kind: :func:`featurize_batch` with the
    networks loaded once, when the actor starts (on its GPU when it was given one)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from genre_ray.features import pretrained
        from genre_ray.features.spectral import _device

        self.settings = settings
        for kind in settings["kinds"]:
            if kind in PRETRAINED_KINDS:
                pretrained.load_network(kind, str(_device()))

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        return featurize_batch(batch, self.settings)


def _map_args(settings: FeatureSettings, per_task: int, tasks: int) -> dict[str, Any]:
    """How the featurizing map runs: tasks of 1 CPU; with a pretrained kind, a pool of actors that
    each load the networks once, one per GPU of the cluster when it has any, else one per CPU."""
    import ray

    args: dict[str, Any] = {"batch_size": per_task, "batch_format": "numpy"}
    if not set(settings.kinds) & set(PRETRAINED_KINDS):
        return {**args, "fn_kwargs": {"settings": settings.as_dict()}, "num_cpus": 1}
    resources = ray.cluster_resources() if ray.is_initialized() else {}
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", os.cpu_count() or 1)))
    size = max(1, min(tasks, gpus or cpus))
    return {**args, "fn_constructor_kwargs": {"settings": settings.as_dict()},
            "compute": ray.data.ActorPoolStrategy(size=size), "num_cpus": 1, "num_gpus": 1 if gpus else 0}


class _Damaged(Exception):
    """A published cache entry whose data cannot be read whole (what failed: the message)."""


def _load(store: _Store, path: str, settings: FeatureSettings, manifest: pd.DataFrame) -> FeatureTable:
    """An entry's data as a table, checked to cover every file of ``manifest``.

    Raises:
        _Damaged: when a Parquet file cannot be read (cut short, overwritten) or files are missing.
    """
    try:
        table = pq.read_table(path, columns=[*_META, *settings.kinds], filesystem=store.fs)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _Damaged(str(exc).splitlines()[0][:300]) from None
    meta = table.select(_META).to_pandas()
    absent = set(manifest["sha"]) - set(meta["sha"])
    if absent:  # every file has rows, clips or a decoding error: part of the data is gone
        raise _Damaged(f"no rows for {len(absent)} of its {manifest['sha'].nunique()} files")
    order = np.lexsort((meta["clip"].to_numpy(), meta["sha"].to_numpy()))
    meta = meta.iloc[order].reset_index(drop=True)
    good = meta["error"].isna().to_numpy()
    rows = order[good]  # sorted, decodable rows, as positions in the file order
    features = {kind: _from_binary(table.column(kind), rows, settings.shape(kind)) for kind in settings.kinds}
    by_sha = manifest.drop_duplicates("sha").set_index("sha")
    bad = meta[~good]
    skipped = decode_report(by_sha.loc[bad["sha"], "path"].to_numpy() if len(bad) else [], bad["error"])
    clips = meta[good].drop(columns="error").reset_index(drop=True)
    return FeatureTable(features, clips, skipped, store.show(path), cache_hit=False)


def pretrained_patches(manifest: pd.DataFrame, settings: FeatureSettings) -> int:
    """About how many 3-s patches the pretrained kinds of ``settings`` run through their networks for
    ``manifest``, all networks together: the patches of each song's clips that hold audio (a song
    shorter than a clip is zero-padded, and the padding is not computed). A song of unknown
    ``duration`` counts as a whole clip. 0 without a pretrained kind."""
    networks = len(set(settings.kinds) & set(PRETRAINED_KINDS))
    if not networks or manifest.empty:
        return 0
    clip = settings.clip_seconds
    seconds = manifest["duration"] if "duration" in manifest else pd.Series(clip, index=manifest.index)
    total = 0
    for sec in seconds.fillna(clip).to_numpy(dtype=float).tolist():
        clips = max(1, n_clips(sec, settings.sample_rate, clip, settings.clip_overlap))
        clips = min(clips, settings.max_clips_per_song or clips)
        total += max(1, min(clips * int(clip // MIN_CLIP_SECONDS), int(sec // MIN_CLIP_SECONDS)))
    return networks * total


def featurize(manifest: pd.DataFrame, settings: FeatureSettings, cache_dir: str | os.PathLike[str],
              batch_files: int = 8, *, in_process: bool | None = None,
              ray_start: Callable[[], None] | None = None) -> FeatureTable:
    """Features for every song of ``manifest``, from the cache or computed with Ray Data.

    Every feature kind in ``settings.kinds`` is its own cached variant, keyed by the content of
    the files and the settings with that kind alone. The kinds that are not cached yet are
    computed together in one Ray Data pass (one decode and one STFT per clip), and each of them
    gets a cache entry that points at that pass; kinds already cached are only read. So a search
    that adds a variant computes just the new one.

    Features are float32, stored and loaded bit for bit. ``info`` of the result has the cache
    key, counts, ``in_process`` (how the missing kinds were computed) and where the time went:
    ``hash_s`` (content hashing), ``compute_s`` (the pass, cache write included) and ``load_s``
    (reading the cache back).

    Args:
        manifest: one row per song with ``path`` (and ``sha`` if already hashed).
        settings: the features to compute.
        cache_dir: the folder that holds one sub-folder per cache key: a path, or a URI such as
            ``s3://bucket/cache`` (see :mod:`genre_ray.storage`).
        batch_files: the most files per Ray Data task (fewer when that keeps every CPU busy), or per
            batch in this process.
        in_process: compute in this process (True) or in Ray Data tasks (False); default: in this
            process for at most :data:`IN_PROCESS_MAX_FILES` files and, with a pretrained kind, at
            most :data:`IN_PROCESS_MAX_PATCHES` patches (:func:`pretrained_patches`). Either
            writes the same cache entries, so either reads what the other wrote.
        ray_start: called once just before a Ray Data pass, by a caller that starts its own Ray
            session (the search's settings) only when the features need one; without it Ray Data
            starts a default local session. Not called on a cache hit or in this process.

    Returns:
        A :class:`FeatureTable`; its ``clips`` carry ``sha`` to join back to the manifest.
    """
    t0 = time.perf_counter()
    timings: dict[str, Any] = {"hash_s": 0.0, "compute_s": 0.0}
    if "sha" not in manifest:
        manifest = manifest.assign(sha=content_hashes(manifest["path"].tolist()))
        timings["hash_s"] = time.perf_counter() - t0
    hashes = manifest["sha"].tolist()
    if in_process is None:
        in_process = (len(set(hashes)) <= IN_PROCESS_MAX_FILES
                      and pretrained_patches(manifest, settings) <= IN_PROCESS_MAX_PATCHES)
    timings["in_process"] = in_process
    store = _Store(cache_dir)
    keys = {kind: cache_key(hashes, replace(settings, kinds=(kind,))) for kind in settings.kinds}
    data = {kind: store.data_of(keys[kind]) for kind in settings.kinds}
    missing = [kind for kind in settings.kinds if data[kind] is None]
    for kind in settings.kinds:
        if kind not in missing:
            log.info("feature cache hit (%s): %s", kind, store.show(data[kind]))

    def compute(kinds: list[str], why: str) -> None:
        todo = replace(settings, kinds=tuple(kinds))
        final = keys[kinds[0]] if len(kinds) == 1 else cache_key(hashes, todo)
        log.info("feature cache %s (%s): featurizing %d files %s into %s", why, ", ".join(kinds), len(manifest),
                 "in this process" if in_process else "with Ray Data", store.show(store.path(final)))
        t1 = time.perf_counter()
        timings.update(_compute(manifest, todo, store, final, {kind: keys[kind] for kind in kinds},
                                batch_files, in_process, ray_start))
        timings["compute_s"] += time.perf_counter() - t1
        data.update({kind: store.data_of(keys[kind]) for kind in kinds})

    if missing:
        compute(missing, "miss")
    t2 = time.perf_counter()
    parts, damaged = _load_entries(store, data, keys, settings, manifest)
    if damaged:  # computed again into a new run folder, whose markers then replace the damaged entries'
        for where, (kinds, why) in damaged.items():
            log.warning("feature cache %s cannot be read (%s); computing %s again", where, why, ", ".join(kinds))
        again = [kind for kinds, _ in damaged.values() for kind in kinds]
        compute(again, "entry damaged")
        missing += again
        more, still = _load_entries(store, {k: data[k] for k in again}, keys, replace(settings, kinds=tuple(again)),
                                    manifest)
        if still:
            where, (_, why) = next(iter(still.items()))
            raise OSError(f"feature cache {where} cannot be read even after computing it again ({why}); check "
                          f"the disk or storage behind {store.show(store.root)}")
        parts += more
    out = parts[0]
    for other in parts[1:]:
        if not (np.array_equal(other.clips["sha"], out.clips["sha"])
                and np.array_equal(other.clips["clip"], out.clips["clip"])):
            raise RuntimeError(f"cached feature variants disagree on the clips ({out.cache_path} vs "
                               f"{other.cache_path}); delete {store.show(store.root)} and run again")
        out.features.update(other.features)
    timings["load_s"] = time.perf_counter() - t2
    out.cache_hit = not missing
    out.cache_path = ", ".join(p.cache_path for p in parts)
    out.seconds = time.perf_counter() - t0
    key = keys[settings.kinds[0]] if len(keys) == 1 else hashlib.sha256(
        json.dumps(keys, sort_keys=True).encode()).hexdigest()[:24]
    out.info = {"cache_key": key, "variant_keys": keys, "computed": missing, "files": int(len(manifest)),
                "clips": int(len(out.clips)), **timings}
    return out


def _load_entries(store: _Store, data: dict[str, str | None], keys: dict[str, str], settings: FeatureSettings,
                  manifest: pd.DataFrame) -> tuple[list[FeatureTable], dict[str, tuple[list[str], str]]]:
    """Read each data folder of ``data`` (kind -> folder) once, for all the kinds it holds.

    Returns:
        The tables read, and the damaged folders: where (as the user would write it) -> (its kinds, why).

    Raises:
        FileNotFoundError: when an entry was removed while this run computed the others.
    """
    by_dir: dict[str, list[str]] = {}
    for kind in data:
        if data[kind] is None:  # removed while we ran
            raise FileNotFoundError(f"feature cache {store.show(store.path(keys[kind]))} vanished during the "
                                    "run; run again")
        by_dir.setdefault(str(data[kind]), []).append(kind)
    parts, damaged = [], {}
    for folder, kinds in by_dir.items():
        try:
            parts.append(_load(store, folder, replace(settings, kinds=tuple(kinds)), manifest))
        except _Damaged as exc:
            damaged[store.show(folder)] = (kinds, str(exc))
    return parts, damaged


class _Store:
    """The feature cache on its filesystem (a folder, NFS, or an object store such as S3).

    Layout: ``<root>/<key>/_genre_ray_cache.json`` is the entry of one cache key; it names the
    folder that holds its data, ``<pass key>/run-<id>``, relative to the root. One Ray Data
    pass writes its Parquet files into its own fresh run folder, and only then the markers of
    the entries it computed: an object store has no atomic folder rename, so the marker, written
    whole or not at all (:func:`genre_ray.storage.put_file`), is what publishes an entry, and a
    run killed before it leaves nothing that a later run would trust. The entries of several
    kinds computed in one pass all name that pass's run folder.

    Caches written before run folders existed keep their data beside the marker (no ``data``
    key) or name a sibling folder; both still read.
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = str(location)
        self.fs, self.root = storage.filesystem(location)

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def show(self, path: str | None) -> str:
        """A path within the store as the user would write it: a local path, or a URI."""
        path = str(path)
        if not storage.is_uri(self.location):
            return path
        return storage.describe(storage.join(self.location, path[len(self.root):].lstrip("/")))

    def _marker(self, key: str) -> dict[str, Any] | None:
        try:
            with self.fs.open_input_stream(self.path(f"{key}/{_COMPLETE}")) as fh:
                doc = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def data_of(self, key: str) -> str | None:
        """The folder that holds an entry's data; None when the entry or its data is absent."""
        doc = self._marker(key)
        if doc is None:
            return None
        data = self.path(str(doc.get("data", key)))
        return data if self.fs.get_file_info(data).type == pafs.FileType.Directory else None

    def publish(self, key: str, doc: dict[str, Any]) -> None:
        storage.put_file(self.fs, self.path(f"{key}/{_COMPLETE}"), json.dumps(doc).encode())

    def discard(self, rel: str) -> None:
        """Remove an unpublished run folder, and its entry folder if that leaves it empty."""
        storage.remove(self.fs, self.path(rel))
        if isinstance(self.fs, pafs.LocalFileSystem):  # on an object store an empty folder is no folder
            with suppress(OSError):  # not empty: another run is writing there, or an entry is published
                os.rmdir(self.path(rel.split("/")[0]))

    def sweep(self, max_age_s: float = 24 * 3600) -> None:
        """Remove what interrupted runs left ``max_age_s`` ago or more: run folders that no entry
        names, temporary files, and the ``.tmp-*`` folders of older versions. Younger ones may
        belong to a run that is still writing."""
        listing = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        base = len(self.root.rstrip("/")) + 1
        files = [(f.path[base:].split("/"), f.mtime) for f in listing if f.type == pafs.FileType.File]
        named = {self.path(str(doc.get("data", parts[0]))) for parts, _ in files
                 if parts[1:] == [_COMPLETE] and (doc := self._marker(parts[0]))}
        newest: dict[str, float] = {}
        for parts, mtime in files:
            if parts[0].startswith(".tmp-"):  # an older version's temporary folder
                unit = self.path(parts[0])
            elif len(parts) > 1 and parts[1] != _COMPLETE:  # a run folder, or a temporary marker
                unit = self.path(f"{parts[0]}/{parts[1]}")
            else:
                continue
            if not any(unit == n or unit.startswith(n + "/") for n in named):
                newest[unit] = max(newest.get(unit, 0.0), mtime.timestamp() if mtime else 0.0)
        for unit, stamp in newest.items():
            if time.time() - stamp > max_age_s:
                storage.remove(self.fs, unit)


def _task_files(n_files: int, batch_files: int) -> int:
    """Files per task: at most ``batch_files``, fewer so that each CPU gets a few tasks.

    With one task per CPU or fewer, one slow task leaves the other CPUs idle at the end.
    """
    import ray

    cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else os.cpu_count() or 1
    cpus = max(1, int(cpus))
    return max(1, min(batch_files, math.ceil(n_files / (3 * cpus))))


def _compute(manifest: pd.DataFrame, settings: FeatureSettings, store: _Store, final: str,
             entries: dict[str, str], batch_files: int, in_process: bool,
             ray_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """One pass into ``<final>/run-<id>``, then the markers of ``final`` and ``entries``."""
    run = f"{final}/run-{uuid.uuid4().hex[:12]}"
    # In hash order, so that the files read back in the order _load wants (no reordering copy).
    items = manifest.drop_duplicates("sha").sort_values("sha")[["path", "sha"]].to_dict("records")
    published = False
    try:
        one_pass = _in_process_pass if in_process else _ray_pass
        if not in_process and ray_start is not None:
            ray_start()
        counts = one_pass(items, settings, store, store.path(run), batch_files)
        pause_point("cache.before_marker")  # the kill tests stop here: the data written, not yet published
        store.publish(final, {"version": CACHE_VERSION, "settings": settings.as_dict(), "files": len(items),
                              "written": time.time(), "data": run})
        published = True  # the data is named now: another run may be reading it
        for kind, key in entries.items():
            if key != final:
                store.publish(key, {"version": CACHE_VERSION, "kind": kind, "data": run})
    finally:
        if not published:
            store.discard(run)
    store.sweep()
    return counts


def _ray_pass(items: list[dict[str, Any]], settings: FeatureSettings, store: _Store, folder: str,
              batch_files: int) -> dict[str, Any]:
    """Featurize ``items`` in Ray Data tasks, each writing its Parquet file into ``folder``."""
    import ray

    per_task = _task_files(len(items), batch_files)
    tasks = max(1, math.ceil(len(items) / per_task))
    ds: Any = ray.data.from_items(items, override_num_blocks=tasks)
    udf = PretrainedFeaturizer if set(settings.kinds) & set(PRETRAINED_KINDS) else featurize_batch
    ds = ds.map_batches(udf, **_map_args(settings, per_task, tasks))
    # This dataset's own context (a copy made by from_items), so the global one is untouched.
    # Operator reservation splits CPUs between operators; here map and write are fused into
    # one, and while the cluster size is still unknown (the first ~1 s of every run) the
    # reservation lets only one task run: measured 1.0 CPU busy of 2.
    ds.context.op_resource_reservation_enabled = False
    with _write_progress(store, folder, len(items), tasks):
        ds.write_parquet(folder, filesystem=store.fs, **_PARQUET_ARGS)
    return {"tasks": tasks}


def _in_process_pass(items: list[dict[str, Any]], settings: FeatureSettings, store: _Store, folder: str,
                     batch_files: int) -> dict[str, Any]:
    """Featurize ``items`` here, ``batch_files`` at a time, each batch written as its Parquet file
    into ``folder``: :func:`featurize_batch` (or the actors' :class:`PretrainedFeaturizer`) with one
    thread for torch and for numpy's BLAS and OpenMP, as in a Ray task of one CPU (Ray sets
    ``OMP_NUM_THREADS=1`` there), so that the values are bit for bit those a task computes: a
    BLAS with two threads sums in another order (measured: gtzan57 differed by one float32 ulp)."""
    import torch
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    config = settings.as_dict()
    udf = PretrainedFeaturizer(config) if set(settings.kinds) & set(PRETRAINED_KINDS) else None
    step = max(1, batch_files)
    store.fs.create_dir(folder, recursive=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1), Progress("featurizing", len(items)) as progress:
            for i in range(0, len(items), step):
                part = items[i:i + step]
                batch = {"path": np.array([r["path"] for r in part]), "sha": np.array([r["sha"] for r in part])}
                table = featurize_batch(batch, config) if udf is None else udf(batch)
                pq.write_table(table, f"{folder}/part-{i // step:06d}.parquet", filesystem=store.fs,
                               **_PARQUET_ARGS)
                progress.update(i + len(part))
    finally:
        torch.set_num_threads(threads)
    return {"batches": math.ceil(len(items) / step)}


@contextmanager
def _write_progress(store: _Store, folder: str, files: int, tasks: int) -> Iterator[Progress]:
    """A :class:`Progress` of the ``files`` a Ray Data write into ``folder`` featurizes in the block.

    The write runs in this thread until it is done, so a watcher thread counts its output: each of
    the ``tasks`` writes one Parquet file when it has featurized its share of the files.
    """
    progress = Progress("featurizing", files)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5 if progress.bar is not None else min(1.0, PROGRESS_EVERY_S)):
            progress.update(files * min(tasks, _parquet_files(store, folder)) // max(1, tasks))

    watcher = threading.Thread(target=watch, name="featurize-progress", daemon=True)
    if progress.enabled:
        watcher.start()
    finished = False
    try:
        yield progress
        finished = True
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        if finished:
            progress.update(files)
        progress.close(finished)


def _parquet_files(store: _Store, folder: str) -> int:
    """The Parquet files in ``folder`` now (0 while it is missing or cannot be listed)."""
    try:
        infos = store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError:
        return 0
    return sum(i.type == pafs.FileType.File and i.path.endswith(".parquet") for i in infos)


def image_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data UDF: image files -> ``(size, size)`` grey-scale float32 in [0, 1], or an error."""
    from PIL import Image, UnidentifiedImageError

    out, errors = [], []
    for path in batch["path"]:
        try:
            with Image.open(str(path)) as im:
                grey = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
            out.append(np.asarray(grey, dtype=np.float32) / 255.0)
            errors.append("")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            out.append(np.zeros((size, size), np.float32))
            errors.append(f"undecodable: cannot read the image ({exc}); re-export it as JPEG or PNG")
    return {"sha": batch["sha"], "image": np.stack(out), "error": np.array(errors, dtype=object)}


#: Images decoded per :func:`image_batch` call, in a Ray Data task or in this process.
IMAGE_BATCH = 16


def featurize_images(manifest: pd.DataFrame, size: int, *, in_process: bool | None = None,
                     ray_start: Callable[[], None] | None = None) -> FeatureTable:
    """Spectrogram images as grey-scale ``(size, size)`` arrays, decoded by :func:`image_batch`.

    Images are cheap to decode, so they are not cached; one image is one clip of its song.

    Args:
        manifest: ``path`` and ``sha`` of each image.
        size: the side of the square each image is resized to.
        in_process: decode in this process (True) or in Ray Data tasks (False); default: in this
            process for at most :data:`IN_PROCESS_MAX_FILES` images, as :func:`featurize` does for
            audio (a PNG spectrogram decodes in milliseconds; Ray Data's workers take seconds to
            start). Both give the same arrays.
        ray_start: called once just before the Ray Data pass, by a caller that starts its own Ray
            only when it is needed.
    """
    t0 = time.perf_counter()
    items = manifest[["path", "sha"]]
    if in_process is None:
        in_process = items["sha"].nunique() <= IN_PROCESS_MAX_FILES
    if in_process:
        parts = [image_batch({"path": part["path"].to_numpy(), "sha": part["sha"].to_numpy()}, size)
                 for part in (items.iloc[i:i + IMAGE_BATCH] for i in range(0, len(items), IMAGE_BATCH))]
        rows = pd.DataFrame({"sha": [x for p in parts for x in p["sha"]],
                             "image": [x for p in parts for x in p["image"]],
                             "error": [x for p in parts for x in p["error"]]})
    else:
        import ray

        if ray_start is not None:
            ray_start()
        ds: Any = ray.data.from_items(items.to_dict("records"))
        ds = ds.map_batches(image_batch, batch_size=IMAGE_BATCH, batch_format="numpy", fn_kwargs={"size": size})
        rows = ds.to_pandas()
    errors = [str(e) for e in rows["error"]]
    bad = np.array([e != "" for e in errors], dtype=bool)
    by_sha = manifest.drop_duplicates("sha").set_index("sha")["path"]
    skipped = pd.DataFrame({"path": by_sha.reindex(rows.loc[bad, "sha"]).to_numpy(), "stage": "decode",
                            "reason": "undecodable",
                            "detail": [e.split(": ", 1)[1] for e, b in zip(errors, bad, strict=True) if b]},
                           columns=SKIPPED_COLUMNS)
    good = rows[~bad].reset_index(drop=True)
    images = np.stack(good["image"].to_list()).astype(np.float32) if len(good) else np.zeros((0, size, size))
    clips = pd.DataFrame({"sha": good["sha"], "clip": 0, "start_s": 0.0})
    key = hashlib.sha256(("images" + "".join(sorted(good["sha"])) + str(size)).encode()).hexdigest()[:24]
    return FeatureTable({"image": images}, clips, skipped, "(images are not cached)", cache_hit=False,
                        seconds=time.perf_counter() - t0, info={"cache_key": key, "files": len(manifest),
                                                                "clips": len(clips), "in_process": in_process})
