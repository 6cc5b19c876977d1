"""``python -m genre_ray.tag LIBRARY --model URI``: predict the genre of every song of a library.

Ray Data runs a pool of actors (``--workers``, one CPU each, and a GPU share where there is a
GPU); each loads a local copy of the registered model once (:class:`genre_ray.serving.classifier.SongClassifier`,
without importing MLflow) and reads, decodes, featurizes and classifies batches of files: only
paths travel through Ray. A file that cannot be decoded becomes a row with its
``error``; it never stops the run. Prediction is the model's own: the same rows as
``mlflow.pyfunc.load_model(URI).predict(pd.DataFrame({"path": [...]}))``. The files are counted as
their rows come back (:class:`genre_ray.features.pipeline.Progress`: a bar on a terminal, else a log line
every few seconds; none with ``-q``).

Resume: the finished rows are written as they arrive, as Parquet part files under
``<out>.parts/`` (every ``--flush-rows`` rows or ``--flush-seconds``, and on Ctrl-C). A file is
done when a part holds a row for its path with the same size and modification time, so a run
that was interrupted, or a later run over a grown library, predicts only the files that are new
or changed. The parts record the model version (an alias is resolved once, at the start);
predictions of another model are refused unless ``--restart``. At the end the parts are merged
into ``--out`` (CSV or Parquet), one row per audio file now in the library.

``--write-tags`` then writes the predicted genre into the files whose confidence reaches
``--threshold``, through :mod:`genre_ray.serving.tagwrite`: a dry run that only prints the plan, unless
``--apply``. ``--undo LOG`` restores the files of a tagging run byte for byte.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from genre_ray import cli
from genre_ray._faults import pause_point

__all__ = ["TagError", "TagSummary", "Predictor", "PartStore", "build_parser", "list_library", "load_model",
           "main", "model_identity", "ray_start", "run_tag"]

log = logging.getLogger("genre_ray.tag")

KEY_COLUMNS = ["path", "size", "mtime_ns"]  # a file is done when a part has a row with all three
# Files per Ray Data call. Each call costs Ray about 40 ms of CPU (measured on 2 cores), more than
# the model needs for 4 songs of 10 s: many files per call amortize it, while the model still sees
# them --batch-files at a time (4: the fastest forward-pass size measured there).
_CALL_FILES = 32
_STATE = "state.json"


class TagError(RuntimeError):
    """A run that cannot start or go on; the message says what to do."""


@dataclass
class TagSummary:
    """What one run did (times in seconds)."""

    out: Path
    files: int
    done_before: int
    predicted: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    ray_start_s: float = 0.0
    model_s: float = 0.0
    predict_s: float = 0.0
    merge_s: float = 0.0
    workers: int = 0
    gpu_per_worker: float = 0.0
    #: (seconds since prediction started, rows) of every batch of rows as it arrived
    arrivals: list[tuple[float, int]] = field(default_factory=list)

    @property
    def songs_per_s(self) -> float:
        busy = self.predict_s + self.merge_s
        return self.predicted / busy if busy > 0 and self.predicted else float("nan")

    @property
    def first_rows_s(self) -> float:
        """Seconds until the first rows came back: mostly the actors starting and loading the model."""
        return self.arrivals[0][0] if self.arrivals else float("nan")

    @property
    def steady_songs_per_s(self) -> float:
        """The rate once running, as the rows arrived: the rows after the first batch, over the time
        from the first batch to the last (actor start-up and model loading are before the first).
        NaN with fewer than two batches."""
        if len(self.arrivals) < 2:
            return float("nan")
        seconds = self.arrivals[-1][0] - self.arrivals[0][0]
        rows = sum(n for _, n in self.arrivals[1:])
        return rows / seconds if rows and seconds > 0 else float("nan")

    def text(self) -> str:
        gpu = f", {self.gpu_per_worker:g} GPU each" if self.gpu_per_worker else ""
        steady = (f"; first rows after {self.first_rows_s:.1f} s, {self.steady_songs_per_s:.1f} songs/s once "
                  "running" if self.arrivals else "")
        lines = [f"{self.files} audio files; {self.done_before} already predicted (resumed), "
                 f"{self.predicted} predicted now in {self.predict_s + self.merge_s:.1f} s "
                 f"({self.songs_per_s:.2f} songs/s, {self.workers} workers{gpu}{steady})",
                 f"start-up: Ray {self.ray_start_s:.1f} s, model {self.model_s:.1f} s (not in songs/s)"]
        if self.failed:
            why = ", ".join(f"{n} {reason}" for reason, n in self.failed.most_common())
            lines.append(f"not predicted: {sum(self.failed.values())} files ({why}); see their error column")
        lines.append(f"predictions: {self.out}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ inputs

def list_library(root: str | os.PathLike[str]) -> pd.DataFrame:
    """The audio files under ``root`` (hidden folders skipped) with their size and mtime, sorted."""
    from genre_ray.data.tags import walk_audio

    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise TagError(f"{folder}: not a folder; pass the folder that holds your music library")
    rows = []
    for path in walk_audio(folder):
        try:
            st = path.stat()
        except OSError:  # vanished between the walk and the stat
            continue
        rows.append((str(path), st.st_size, st.st_mtime_ns))
    return pd.DataFrame(rows, columns=KEY_COLUMNS)


def load_model(model: str, tracking_uri: str | None = None) -> Any:
    """The :class:`~genre_ray.serving.SongClassifier` behind ``model``, refused unless it hears audio.

    Raises:
        TagError: for a URI that names no genre classifier, or one that takes feature rows.
    """
    from genre_ray import serving

    try:
        classifier = serving.load(model, tracking_uri)
    except serving.ServingError as exc:
        raise TagError(f"{exc}; check --model and --tracking-uri") from None
    if not classifier.audio:
        raise TagError(f"{model}: a {classifier.kind} model takes feature rows, not audio files")
    return classifier


def model_identity(classifier: Any) -> str:
    """A hash of the classifier's settings, classes and weights: the same model, whatever its URI.

    A resumed run checks it, so that an alias moved since (or a folder retrained in place) is noticed.
    """
    digest = hashlib.sha256(json.dumps(classifier.meta(), sort_keys=True, default=str).encode())
    nets = classifier.model if isinstance(classifier.model, list) else [classifier.model]  # an ensemble: each member
    for net in nets:
        if hasattr(net, "state_dict"):
            for name, tensor in sorted(net.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().numpy().tobytes())
        else:  # a classical (scikit-learn) model
            digest.update(pickle.dumps(net))
    return digest.hexdigest()


def _local_copy(classifier: Any, identity: str, parts: Path) -> Path:
    """The classifier saved once under ``parts`` (every actor loads this copy: one version, no MLflow)."""
    dest = parts / f"model-{identity[:12]}"
    for old in parts.glob("model-*"):  # another model's copy, from before a --restart
        if old != dest:
            shutil.rmtree(old, ignore_errors=True)
    if not dest.is_dir():
        tmp = parts / f".{dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        classifier.save(tmp)
        os.replace(tmp, dest)  # complete, or not there at all
    return dest


# ------------------------------------------------------------------------------------------ actors

def _schema(classes: list[str]) -> pa.Schema:
    return pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                      ("genre", pa.string()), ("confidence", pa.float64()), ("error", pa.string()),
                      *((f"prob_{c}", pa.float64()) for c in classes)])


class Predictor:
    """Ray Data callable class: loads the model once per actor, then a call's files -> prediction rows.

    Args:
        model_dir: a folder written by :meth:`genre_ray.serving.SongClassifier.save`.
        batch_files: files whose clips share one forward pass (a call holds several such batches).
        threads: torch threads of this actor.
        gpu: run the network on the GPU when one is visible.
    """

    def __init__(self, model_dir: str, batch_files: int = 4, threads: int = 1, gpu: bool = False) -> None:
        import torch

        from genre_ray.serving.classifier import (
            SongClassifier,  # not genre_ray.serving: no MLflow in the actors
        )

        torch.set_num_threads(max(1, threads))  # one actor per CPU: no oversubscription
        self.model = SongClassifier.load(model_dir)
        if gpu and torch.cuda.is_available():
            self.model.to("cuda")
        self.batch_files = max(1, batch_files)
        self.schema = _schema(self.model.classes)

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        paths, step = batch["path"].tolist(), self.batch_files
        out = pd.concat([self._predict(paths[i:i + step]) for i in range(0, len(paths), step)])
        out = batch[KEY_COLUMNS].merge(out.drop(columns=["size", "mtime_ns"], errors="ignore"), on="path")
        return pa.Table.from_pandas(out.reindex(columns=self.schema.names), schema=self.schema,
                                    preserve_index=False)

    def _predict(self, paths: list[str]) -> pd.DataFrame:
        """Rows for ``paths`` in order; a failure outside decoding is retried file by file, then recorded."""
        try:
            return self.model.predict_batch(paths).drop(columns=["row"], errors="ignore")
        except Exception as exc:  # noqa: BLE001 - one file must not fail the others
            if len(paths) > 1:
                return pd.concat([self._predict([p]) for p in paths], ignore_index=True)
            return pd.DataFrame({"path": paths, "genre": [None], "confidence": [np.nan],
                                 "error": [f"{type(exc).__name__}: {exc}"]})


# ------------------------------------------------------------------------------------------ parts

class PartStore:
    """The resumable state of one output: ``<out>.parts/`` with ``state.json`` and ``part-*.parquet``."""

    def __init__(self, out: Path, model: str, identity: str, classes: list[str],
                 restart: bool = False) -> None:
        self.folder = out.with_name(out.name + ".parts")
        self.classes = classes
        state = {"model": model, "model_sha256": identity, "classes": classes}
        old = self._state()
        if old is not None and old.get("model_sha256") != identity and not restart:
            before = f"{old.get('model')}, sha256 {str(old.get('model_sha256'))[:12]}"
            raise TagError(f"{self.folder} holds predictions of another model ({before}) than {model} "
                           f"(sha256 {identity[:12]}); pass --restart to discard them, or another --out")
        if restart and self.folder.exists():
            for part in self.folder.glob("part-*.parquet"):
                part.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / _STATE).write_text(json.dumps(state, indent=1))
        numbers = [int(p.stem.split("-")[1]) for p in self.folder.glob("part-*.parquet")]
        self._next = 1 + max(numbers, default=-1)

    def _state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / _STATE).read_text())
        except (OSError, ValueError):
            return None

    def read(self) -> pd.DataFrame:
        """Every row of every part (a later part's row for a path wins)."""
        tables = []
        for part in sorted(self.folder.glob("part-*.parquet")):
            try:
                tables.append(pq.read_table(part, schema=_schema(self.classes)))
            except (OSError, pa.ArrowInvalid) as exc:  # written atomically, so only a foreign file
                log.warning("ignoring unreadable part %s (%s)", part, exc)
        if not tables:
            return pd.DataFrame(columns=_schema(self.classes).names)
        return pa.concat_tables(tables).to_pandas().drop_duplicates("path", keep="last")

    def write(self, table: pa.Table) -> Path:
        """Add one part, atomically (a crash leaves either the whole part or none)."""
        path = self.folder / f"part-{self._next:05d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        pause_point("tag.part_before_replace")  # the kill tests stop here: a whole part, not yet named
        os.replace(tmp, path)
        self._next += 1
        return path

    def compact(self, rows: pd.DataFrame) -> None:
        """Replace all parts by one holding ``rows`` (so that the folder does not grow run after run)."""
        old = sorted(self.folder.glob("part-*.parquet"))
        self.write(pa.Table.from_pandas(rows, schema=_schema(self.classes), preserve_index=False))
        for part in old:
            part.unlink()


def _done(store: PartStore, listing: pd.DataFrame) -> pd.DataFrame:
    """The part rows whose path, size and mtime match a file of the library now."""
    rows = store.read()
    if rows.empty:
        return rows
    return rows.merge(listing, on=KEY_COLUMNS, how="inner")[rows.columns]


# ------------------------------------------------------------------------------------------ run

def ray_start(cpus: int | None = None) -> float:
    """Start Ray as ``tag`` does, unless it runs already; returns the seconds it took.

    With ``RAY_ADDRESS`` set it joins that cluster (keeping the cluster's own authentication);
    otherwise it starts a private local Ray with ``cpus`` CPUs (default: all), without a
    dashboard or a token. Ray Data's own progress bars are turned off either way
    (:func:`genre_ray.features.pipeline.ray_data_progress_off`).
    """
    import ray

    from genre_ray.features.pipeline import ray_data_progress_off

    t0 = time.perf_counter()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if not address:  # a private local Ray needs no token; a cluster's own auth mode is kept
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    ray_data_progress_off()
    return time.perf_counter() - t0


def _resources(workers: int | None, gpu_per_worker: float | None) -> tuple[int, float]:
    """Workers (default: one per CPU of the cluster) and GPU share each (default: the GPUs spread evenly)."""
    import ray

    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    n = workers or max(1, int(res.get("CPU", 1)))
    share = gpu_per_worker if gpu_per_worker is not None else (min(1.0, gpus / n) if gpus else 0.0)
    if share > gpus > 0 or (share and not gpus):
        raise TagError(f"--gpu-per-worker {share:g}: the cluster has {gpus:g} GPUs")
    return n, share


def _stream(ds: Any, store: PartStore, summary: TagSummary, flush_rows: int, flush_s: float,
            total: int) -> None:
    """Write the dataset's rows as parts as they come; on any exit, what has come is kept.

    The ``total`` files are counted as their rows come (:class:`genre_ray.features.pipeline.Progress`).
    """
    from genre_ray.features.pipeline import Progress

    buffer: list[pa.Table] = []
    last = start = time.monotonic()

    def flush() -> None:
        nonlocal last
        if buffer:
            table = pa.concat_tables(buffer)
            buffer.clear()
            store.write(table)
            errors = [e for e in table.column("error").to_pylist() if e]
            summary.failed.update(e.split(":", 1)[0] for e in errors)
            summary.predicted += table.num_rows
        last = time.monotonic()

    # No prefetch: with it, a call's rows reach here only once the next call is done too (measured),
    # which would leave them unsaved a call longer.
    # iter(): Ray Data returns an iterable; its iterator is the generator that close() stops.
    batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    progress = Progress("tagging", total, logger=log)
    try:
        for batch in batches:
            summary.arrivals.append((time.monotonic() - start, batch.num_rows))
            progress.update(progress.done + batch.num_rows)
            buffer.append(batch)
            if sum(t.num_rows for t in buffer) >= flush_rows or time.monotonic() - last >= flush_s:
                flush()
    finally:
        # Close the iteration now, not when a traceback holding it is freed: that stops Ray Data's
        # executor and releases the actors' CPUs (else, after Ctrl-C in a notebook, the next run waits).
        batches.close()
        flush()
        progress.close(finished=progress.done >= total)


def run_tag(library: str | os.PathLike[str], model: str, out: str | os.PathLike[str] = "predictions.csv", *,
            tracking_uri: str | None = None, batch_files: int = 4, workers: int | None = None,
            gpu_per_worker: float | None = None, cpus: int | None = None, flush_rows: int = 64,
            flush_s: float = 30.0, restart: bool = False) -> tuple[pd.DataFrame, TagSummary]:
    """Predict every audio file under ``library`` not predicted yet, and write the whole table to ``out``.

    Args:
        library: the music folder (searched recursively; hidden folders skipped).
        model: ``models:/genre-<task>@champion``, ``models:/<name>/<version>``, ``runs:/...`` or a folder.
        out: the table to write, ``.csv`` or ``.parquet``; its parts go to ``<out>.parts/``.
        tracking_uri: the MLflow store for ``models:/`` and ``runs:/`` URIs.
        batch_files: files per actor call (their clips share one forward pass).
        workers: actors (default: one per CPU of the Ray cluster).
        gpu_per_worker: each actor's GPU share (default: the GPUs spread over the actors, 0 without).
        cpus: CPUs of a Ray started here (default: all).
        flush_rows, flush_s: a part is written every ``flush_rows`` rows or ``flush_s`` seconds.
        restart: discard the parts of an earlier run (needed after a model change).

    Returns:
        The table (one row per audio file of the library) and the :class:`TagSummary`.

    Raises:
        TagError: for a bad library, model or output; KeyboardInterrupt passes through after the
            rows received so far are saved.
    """
    out = Path(out).expanduser().resolve()
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise TagError(f"--out {out}: must end in .csv or .parquet")
    listing = list_library(library)
    if listing.empty:
        from genre_ray.data.audio import AUDIO_EXTENSIONS

        raise TagError(f"{library}: no audio files in it (looked for {', '.join(AUDIO_EXTENSIONS)})")
    t0 = time.perf_counter()
    classifier = load_model(model, tracking_uri)
    identity = model_identity(classifier)
    store = PartStore(out, model, identity, classifier.classes, restart)
    model_dir = _local_copy(classifier, identity, store.folder)
    done = _done(store, listing)
    todo = listing[~listing["path"].isin(done["path"])]
    summary = TagSummary(out, len(listing), len(done), model_s=time.perf_counter() - t0)
    if len(todo):
        summary.ray_start_s = ray_start(cpus)
        summary.workers, summary.gpu_per_worker = _resources(workers, gpu_per_worker)
        t1 = time.perf_counter()
        try:  # on Ctrl-C the rows received so far are saved, then KeyboardInterrupt goes on
            ds = _dataset(todo, str(model_dir), batch_files, summary)
            _stream(ds, store, summary, flush_rows, flush_s, len(todo))
        finally:
            summary.predict_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    table = _done(store, listing).sort_values("path").reset_index(drop=True)
    store.compact(table)
    _write_table(table, out)
    summary.merge_s = time.perf_counter() - t2
    return table, summary


def _dataset(todo: pd.DataFrame, model_dir: str, batch_files: int, summary: TagSummary) -> Any:
    import ray

    # One block per actor call, of up to _CALL_FILES files, at least 3 calls per actor when there are
    # files enough (so that none idles at the end).
    per_call = max(1, min(_CALL_FILES, math.ceil(len(todo) / (3 * summary.workers))))
    blocks = min(math.ceil(len(todo) / per_call), 5000)  # bigger blocks are cut into calls by batch_size
    ds: Any = ray.data.from_items(todo.to_dict("records"), override_num_blocks=blocks)
    ds = ds.map_batches(Predictor, fn_constructor_kwargs={"model_dir": model_dir, "batch_files": batch_files,
                                                          "threads": 1, "gpu": summary.gpu_per_worker > 0},
                        batch_size=per_call, batch_format="pandas", num_cpus=1,
                        num_gpus=summary.gpu_per_worker or None,
                        compute=ray.data.ActorPoolStrategy(size=summary.workers))
    # As in genre_ray.features.pipeline: the reservation lets a single actor run while the cluster size is
    # still unknown; this dataset's context is its own copy.
    ds.context.op_resource_reservation_enabled = False
    return ds


def _write_table(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    os.replace(tmp, out)


# ------------------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    name = cli.prog("tag")
    p = argparse.ArgumentParser(
        prog=name,
        description="Predict the genre of every song of a music library with a registered model (Ray Data, "
        "in parallel; on a GPU when there is one), write the predictions to CSV or Parquet, resuming an "
        "interrupted run; optionally write the genres into the files' tags, with an undo log.",
        epilog=f"Examples: {name} ~/Music --model models:/genre-demo@champion --out "
        "preds.csv | ... --write-tags --threshold 0.7 (dry run) | ... --write-tags --apply | "
        f"{name} --undo ~/Music/.genre_ray-undo/tag-20250101-120000. {cli.EXIT_STATUS} Files that "
        f"cannot be decoded are rows with an error (exit {cli.EXIT_SKIPPED}); a tag that cannot be written "
        f"or restored is exit {cli.EXIT_FAILED}.")
    p.add_argument("library", nargs="?", help="the music folder (searched recursively, hidden folders "
                   "skipped)")
    p.add_argument("--model", metavar="URI", help="models:/genre-TASK@champion, models:/NAME/VERSION, "
                   "runs:/RUN/model or a model folder (as for predict --model)")
    p.add_argument("--out", default="predictions.csv", help="the predictions table, .csv or .parquet; "
                   "OUT.parts/ keeps the state for resuming (default: predictions.csv)")
    p.add_argument("--tracking-uri", help="MLflow store of the model (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///results/mlflow.db)")
    p.add_argument("--batch-files", type=int, default=4, metavar="N", help="files whose clips share one "
                   "forward pass of the model (default: 4; more on a GPU)")
    p.add_argument("--workers", type=int, metavar="N", help="Ray actors, one CPU each (default: one per CPU)")
    p.add_argument("--gpu-per-worker", type=float, metavar="G", help="GPU share of each actor (default: the "
                   "GPUs spread over the actors; 0 without a GPU)")
    p.add_argument("--flush-rows", type=int, default=64, metavar="N", help="save finished rows every N rows "
                   "(default: 64) or --flush-seconds (default: 30)")
    p.add_argument("--flush-seconds", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("--restart", action="store_true", help="discard saved predictions and predict everything")
    tags = p.add_argument_group("writing genre tags (mutagen: ID3 TCON, Vorbis GENRE, MP4 ©gen)")
    tags.add_argument("--write-tags", action="store_true", help="plan genre tags from the predictions: a dry "
                      "run that prints what would be written, unless --apply")
    tags.add_argument("--threshold", type=float, default=0.6, help="least confidence written (default: 0.6)")
    tags.add_argument("--apply", action="store_true", help="really write the tags (each file through a "
                      "checked temporary copy; the originals are kept for --undo)")
    tags.add_argument("--overwrite", action="store_true", help="also replace a genre a file already has "
                      "(default: such files are left alone)")
    tags.add_argument("--undo-dir", metavar="DIR", help="where undo folders go (default: "
                      "LIBRARY/.genre_ray-undo)")
    tags.add_argument("--undo", metavar="UNDO_LOG", help="restore the files of a tagging run (its undo.jsonl "
                      "or folder) byte for byte, and exit")
    p.add_argument("--json", action="store_true", help="print the run's summary as one JSON document on "
                   "stdout (files, predicted, not predicted and why, timings, where the table is; the tag "
                   "counts with --write-tags or --undo); the rest goes to stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary: no progress "
                   "(a bar on a terminal, else a line every few seconds)")
    return p


def _print_results(results: pd.DataFrame, what: str, limit: int = 20) -> None:
    counts = results["status"].value_counts()
    print(f"{what}: " + (", ".join(f"{n} {s}" for s, n in counts.items()) if len(results) else "nothing"))
    shown = results[results["status"] != "skipped"].head(limit)
    if len(shown):
        print(shown.to_string(index=False, max_colwidth=70))
    skipped = results.loc[results["status"] == "skipped", "detail"].str.split(":").str[0].value_counts()
    if len(skipped):
        print("skipped: " + ", ".join(f"{n} {r}" for r, n in skipped.items()))


def _write_tags(args: argparse.Namespace, table: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, Path | None]:
    """Plan (and with ``--apply`` write) the tags: ``(each file's result, the undo folder or None)``."""
    from genre_ray.serving.tagwrite import apply_plan, plan_tags

    plan = plan_tags(table, args.threshold)
    low = plan["reason"].value_counts()
    print(f"tags: {int((plan['action'] == 'tag').sum())} of {len(plan)} files at confidence >= "
          f"{args.threshold:g}" + ("".join(f"; {n} {r}" for r, n in low.items() if r)))
    undo_dir = Path(args.undo_dir or Path(args.library) / ".genre_ray-undo") if args.apply else None
    results, undo_log = apply_plan(plan, undo_dir, overwrite=args.overwrite)
    results.to_csv(out.with_name(out.stem + ".tags.csv"), index=False)
    _print_results(results, "tags written" if args.apply else "DRY RUN (nothing written; --apply writes)")
    if undo_log is not None:
        print(f"undo: {cli.prog('tag')} --undo {undo_log.folder}")
    return results, None if undo_log is None else undo_log.folder


def _summary_doc(summary: TagSummary, table: pd.DataFrame) -> dict[str, Any]:
    """What ``--json`` prints of a run (see :func:`genre_ray.cli.jsonable`)."""
    errors = table["error"].dropna() if "error" in table else pd.Series(dtype=str)
    return {"out": summary.out, "files": summary.files, "done_before": summary.done_before,
            "predicted": summary.predicted, "not_predicted": len(errors),
            "not_predicted_why": errors.str.split(":").str[0].value_counts().to_dict(),
            "failed_now": dict(summary.failed), "workers": summary.workers,
            "gpu_per_worker": summary.gpu_per_worker, "songs_per_s": summary.songs_per_s,
            "steady_songs_per_s": summary.steady_songs_per_s, "first_rows_s": summary.first_rows_s,
            "seconds": {"ray_start": summary.ray_start_s, "model": summary.model_s,
                        "predict": summary.predict_s, "merge": summary.merge_s}}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (:data:`genre_ray.cli.EXIT_STATUS`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:  # also where the log was set up before (basicConfig then changes nothing)
        logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("ray", "ray.data", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.undo and (not args.library or not args.model):
        print("error: give LIBRARY and --model (or --undo UNDO_LOG)", file=sys.stderr)
        return cli.EXIT_USAGE
    doc: dict[str, Any] = {}
    try:
        with cli.stdout_to_stderr() if args.json else contextlib.nullcontext():
            code = _undo(args, doc) if args.undo else _tag(args, doc)
    except KeyboardInterrupt:
        print("interrupted: the predictions made so far are saved; run the same command again to finish",
              file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    if args.json and code != cli.EXIT_USAGE:
        cli.print_json(doc)
    return code


def _undo(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    from genre_ray.serving.tagwrite import undo

    try:
        results = undo(args.undo)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    _print_results(results, "undo")
    doc["undo"] = results["status"].value_counts().to_dict()
    return cli.EXIT_OK if results["status"].isin(["restored", "already_original"]).all() else cli.EXIT_FAILED


def _tag(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    from genre_ray.tracking import default_tracking_uri

    tracking = args.tracking_uri or default_tracking_uri("results")
    ray_before = _ray_running()
    try:
        table, summary = run_tag(args.library, args.model, args.out, tracking_uri=tracking,
                                 batch_files=args.batch_files, workers=args.workers,
                                 gpu_per_worker=args.gpu_per_worker, flush_rows=args.flush_rows,
                                 flush_s=args.flush_seconds, restart=args.restart)
    except TagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    finally:
        if not ray_before:  # a Ray session of the caller's (tests) is left running
            _ray_stop()
    print(summary.text())
    doc.update(model=args.model, **_summary_doc(summary, table))
    if args.write_tags:
        results, undo_folder = _write_tags(args, table, summary.out)
        doc["tags"] = {"applied": bool(args.apply), "status": results["status"].value_counts().to_dict(),
                       "undo": undo_folder}
        if (results["status"] == "failed").any():
            return cli.EXIT_FAILED
    return cli.EXIT_SKIPPED if doc["not_predicted"] else cli.EXIT_OK


def _ray_running() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _ray_stop() -> None:
    if _ray_running():
        sys.modules["ray"].shutdown()


if __name__ == "__main__":
    sys.exit(cli.run(main))
