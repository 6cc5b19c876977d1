"""The engine behind ``python -m genre_ray.search``: data, Ray Tune, test evaluation, MLflow.

Steps: manifest -> song-level split -> Ray Data featurization (cached) -> the train and
validation features into the object store once -> Tuner(OptunaSearch + ASHA) -> leaderboard
-> the best checkpoint scored once on the test songs -> model registered -> results/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genre_ray.config import SearchConfig
from genre_ray.data.collection import MANIFEST_COLUMNS, SKIPPED_COLUMNS, CollectionError, folder_manifest
from genre_ray.data.demo import DemoSpec, ensure_demo_collection
from genre_ray.data.splits import (
    AUTO_FOLDS_BELOW,
    SplitError,
    assign_splits,
    auto_folds,
    song_folds,
    split_id,
    split_report,
)
from genre_ray.data.tables import image_manifest, table_manifest
from genre_ray.data.tasks import TaskError, TaskSpec, apply_task
from genre_ray.evaluate import classification_scores, confusion_png, majority_baseline, per_class_report
from genre_ray.features import FeatureSettings
from genre_ray.search.report import write_summary
from genre_ray.search.tuning import (
    ResourceError,
    StudyJournalError,
    can_restore,
    check_resources,
    check_study,
    cut_snapshot_of,
    finished_trials,
    leaderboard,
    ray_init,
    repair_trial_results_of,
    resume_fit,
    study_storage,
    trial_data,
    tuner,
)
from genre_ray.storage import describe, disk_usage, exists, is_uri, join, node_local

__all__ = ["SearchFailed", "SearchInterrupted", "run_search"]

log = logging.getLogger("genre_ray.search")


class SearchFailed(RuntimeError):
    """The search could not produce a model; the message says why and what to do."""


class SearchInterrupted(SearchFailed):
    """A Ctrl-C or a SIGTERM ended the search's trials: Tune saved its state, and ``--resume`` goes on
    from it. ``signum`` is the signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def _collection(cfg: SearchConfig, results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest of the configured source, and the files its scan had to skip."""
    data = cfg.data
    raw = data.path  # a URI (s3://, gs://, file://) stays a URI: folder reads it through pyarrow
    source, path = data.source, (raw if is_uri(raw) else Path(raw).expanduser()) if raw else None
    try:
        if source == "demo":
            root = path or results / "demo_collection"
            return folder_manifest(ensure_demo_collection(root, DemoSpec(**data.demo)))
        if path is None:  # the config refuses this; a caller that built one by hand gets the key
            raise CollectionError(f"data.path: required for data.source {source}, got null")
        if source == "folder":
            return folder_manifest(path)
        if source == "tags":
            from genre_ray.data.tags import tag_manifest

            manifest, skipped, unmapped = tag_manifest(path, data.mapping)
            if len(unmapped):
                log.warning("genre tags with no mapping (add them to data.mapping): %s",
                            ", ".join(f"{r.raw_genre} ({r.files})" for r in unmapped.head(15).itertuples()))
            return manifest, skipped
        if source == "csv":
            from genre_ray.data.manifests import csv_manifest

            return csv_manifest(path)
        if source == "fma":
            from genre_ray.data.manifests import fma_manifest

            return fma_manifest(path, Path(data["audio_dir"]).expanduser(), data.subset)
        if source == "images":
            return image_manifest(path)
        if source == "table":  # rows and values are read together with the features (_featurize)
            return pd.DataFrame(columns=MANIFEST_COLUMNS), pd.DataFrame(columns=SKIPPED_COLUMNS)
        raise SearchFailed(f"data.source {source} has no reader")  # config validation prevents this
    except CollectionError as exc:
        raise SearchFailed(str(exc)) from None


def _drop_copies(manifest: pd.DataFrame, truncated: str = "keep") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Count byte-identical files once, so a copy cannot sit in two splits; then keep or leave out
    the files that end before their header says (``data.truncated``).

    A copy filed under another genre is a label conflict: the song is counted once, under the
    first file's label, and the report names both files and both labels.
    """
    from genre_ray.data.collection import truncated_files

    dup = manifest.duplicated("sha")
    first = manifest.drop_duplicates("sha").set_index("sha")
    rows = []
    for path, sha, label in manifest.loc[dup, ["path", "sha", "label"]].itertuples(index=False):
        orig, orig_label = first.at[sha, "path"], first.at[sha, "label"]
        if str(label).strip().casefold() == str(orig_label).strip().casefold():
            rows.append({"path": path, "stage": "scan", "reason": "duplicate",
                         "detail": f"same bytes as {orig}"})
        else:
            rows.append({"path": path, "stage": "scan", "reason": "label_conflict",
                         "detail": f"same bytes as {orig}, which is labelled {orig_label!r}, but this copy "
                                   f"is labelled {label!r}; counted once, as {orig_label!r} - keep the "
                                   "recording under the genre it belongs to"})
    if rows:
        conflicts = sum(r["reason"] == "label_conflict" for r in rows)
        log.warning("%d files are byte-identical copies of others (%d under another label); each is counted "
                    "once", len(rows), conflicts)
    manifest, cut = truncated_files(manifest[~dup].reset_index(drop=True), truncated)
    return manifest, pd.DataFrame([*rows, *cut.to_dict("records")], columns=SKIPPED_COLUMNS)


def _featurize(cfg: SearchConfig, manifest: pd.DataFrame, results: Path,
               start_ray: Callable[[], None] | None = None) -> tuple[Any, pd.DataFrame]:
    """Features of every row of the manifest (already hashed: ``sha``), by the source's kind.

    ``start_ray`` (default: :func:`ray_init`) is called before anything that needs Ray: images, or
    audio features that go to Ray Data rather than this process (see ``featurize``).
    """
    start_ray = start_ray or (lambda: ray_init(cfg))
    from genre_ray.features.pipeline import FeatureTable, featurize

    kind = cfg.features.kind
    if kind == "table":
        try:
            rows, values, names, skipped = table_manifest(cfg.data["path"])
        except CollectionError as exc:
            raise SearchFailed(str(exc)) from None
        clips = pd.DataFrame({"sha": rows["sha"], "clip": 0, "start_s": 0.0})
        log.info("features: %d columns read from the table (no audio to featurize)", len(names))
        return FeatureTable({"table": values}, clips, skipped, str(cfg.data.path), cache_hit=True,
                            info={"cache_key": hashlib.sha256(values.tobytes()).hexdigest()[:24]}), rows
    if kind == "image":
        from genre_ray.features.pipeline import featurize_images

        table = featurize_images(manifest, cfg.features.image_size, ray_start=start_ray)
    else:
        settings = FeatureSettings.from_config(cfg.features, kinds=tuple(cfg.feature_kinds))
        cache_dir = cfg.features.cache_dir or results / "cache"
        table = featurize(manifest, settings, cache_dir, cfg.features.batch_files, ray_start=start_ray)
    log.info("features: %s (%s, %d clips, %.1f s)", table.cache_path, "cache hit" if table.cache_hit else
             "computed", len(table.clips), table.seconds)
    return table, manifest


def _data_report(skipped: pd.DataFrame, path: Path) -> None:
    """Write every skipped or damaged file with its reason, and say on the console how many and why.

    A file kept though damaged (reason ``... (kept)``, such as a truncated one) is counted apart.
    """
    extra = [c for c in skipped.columns if c not in SKIPPED_COLUMNS]
    skipped.reindex(columns=[*SKIPPED_COLUMNS, *extra]).to_csv(path, index=False)
    if skipped.empty:
        return
    kept = skipped["reason"].astype(str).str.endswith("(kept)")
    for rows, what in ((skipped[~kept], "skipped %d files"), (skipped[kept], "kept %d damaged files")):
        if len(rows):
            counts = ", ".join(f"{n} {reason}" for reason, n in rows["reason"].value_counts().items())
            log.warning(what + " (%s); each with its reason in %s", len(rows), counts, path)


def _split_arrays(cfg: SearchConfig, songs: pd.DataFrame, manifest: pd.DataFrame, table: Any) -> dict[str, Any]:
    """Clip features grouped by split, with song indices, for training and the final test."""
    from genre_ray.training.wrappers import TrialData

    pos = pd.Series(np.arange(len(songs)), index=songs["song_id"])
    song_of_sha = manifest.drop_duplicates("sha").set_index("sha")["song_id"]
    clip_song = pos.reindex(song_of_sha.reindex(table.clips["sha"]).to_numpy()).to_numpy()
    in_task = ~np.isnan(clip_song)  # clips of songs that this task leaves out
    clip_song = clip_song[in_task].astype(np.int64)
    classes = sorted(songs["label"].unique())
    y_song = songs["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    split = songs["split"].to_numpy()

    def part(x: np.ndarray, members: np.ndarray) -> dict[str, Any]:
        mask = np.isin(clip_song, members)
        local = pd.Series(np.arange(len(members)), index=members)
        return {"x": np.ascontiguousarray(x[mask]), "y": y_song[clip_song[mask]].astype(np.int64),
                "song": local.loc[clip_song[mask]].to_numpy(), "y_song": y_song[members]}

    def trial(train: dict[str, Any], val: dict[str, Any]) -> TrialData:
        tr = train["x"]
        if len(tr) == 0 or len(val["x"]) == 0:
            raise SearchFailed("too few songs to make train and validation splits; each genre needs at "
                               "least 3 readable songs")
        axes = (0, 2) if tr.ndim == 3 else (0,)  # per bin (over time) for 2-D clips, per column for vectors
        return TrialData(tr, train["y"], val["x"], val["y"], val["song"], val["y_song"], classes,
                         mean=tr.mean(axis=axes, keepdims=True)[0], std=tr.std(axis=axes, keepdims=True)[0] + 1e-5,
                         train_song=train["song"], y_train_song=train["y_song"])

    data: dict[str, TrialData | list[TrialData]] = {}
    tests: dict[str, dict[str, Any]] = {}
    for kind in cfg.feature_kinds:  # one set of trial data per feature variant, the same songs in each
        x = table.features[kind][in_task]
        tests[kind] = part(x, np.flatnonzero(split == "test"))
        if "fold" in songs:  # cross-validation: fold f is validation, the other folds train
            fold = songs["fold"].to_numpy()
            data[kind] = [trial(part(x, np.flatnonzero((split != "test") & (fold != f))),
                                part(x, np.flatnonzero(fold == f))) for f in range(int(fold.max()) + 1)]
        else:
            data[kind] = trial(part(x, np.flatnonzero(split == "train")), part(x, np.flatnonzero(split == "val")))
    dev = np.isin(clip_song, np.flatnonzero(split != "test"))
    y_dev = y_song[clip_song[dev & np.isin(clip_song, np.flatnonzero(split == "train"))]] \
        if "fold" not in songs else y_song[clip_song[dev]]
    n_test = int(np.isin(clip_song, np.flatnonzero(split == "test")).sum())
    clips = {"train": len(y_dev), "val": int(dev.sum()) - len(y_dev), "test": n_test}

    def refit_data(kind: str) -> TrialData:
        """Every non-test song of the task as training data (its validation part is the same songs)."""
        everything = part(table.features[kind][in_task], np.flatnonzero(split != "test"))
        return trial(everything, everything)

    if "fold" in songs:  # the songs that the trials' models predict without training on them, in fold order
        fold = songs["fold"].to_numpy()
        oof = np.concatenate([np.flatnonzero(fold == f) for f in range(int(fold.max()) + 1)])
    else:
        oof = np.flatnonzero(split == "val")
    oof_songs = songs.iloc[oof][[c for c in ("song_id", "artist", "fold", "path") if c in songs]].reset_index(drop=True)
    dev_songs = int((split != "test").sum())
    if "fold" in songs:
        k = int(songs["fold"].max()) + 1
        trained = f"{k} fold models, each on about {round(dev_songs * (k - 1) / k)} of the {dev_songs} non-test songs"
    else:
        trained = f"the {int((split == 'train').sum())} training songs"
    return {"trial": data, "test": tests, "classes": classes, "y_dev": y_dev, "clips": clips, "refit": refit_data,
            "oof_songs": oof_songs, "oof_y": y_song[oof],
            "dev_songs": dev_songs, "selected_trained_on": trained}


def load_collection(cfg: SearchConfig, results: Path, start_ray: Callable[[], None] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, Any, pd.DataFrame]:
    """Read the source and featurize it (cached): ``(songs, manifest rows, features, skipped files)``.

    ``start_ray`` is what to call before featurizing needs Ray (default: :func:`ray_init`).
    """
    from genre_ray.features.pipeline import content_hashes

    manifest, skipped = _collection(cfg, results)
    if cfg.features.kind == "table":
        table, manifest = _featurize(cfg, manifest, results)
    else:
        manifest, copies = _drop_copies(manifest.assign(sha=content_hashes(manifest["path"].tolist())),
                                        cfg.data.truncated)
        table, manifest = _featurize(cfg, manifest, results, start_ray)
        skipped = pd.concat([skipped, copies], ignore_index=True)
    skipped = pd.concat([skipped, table.skipped], ignore_index=True)
    rows = manifest[manifest["sha"].isin(set(table.clips["sha"]))].reset_index(drop=True)
    songs = rows.drop_duplicates("song_id").reset_index(drop=True)  # a table has rows per segment
    return songs, rows, table, skipped


def split_songs(cfg: SearchConfig, task: TaskSpec, all_songs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Label the songs for ``task`` and split them: ``(songs with split [and fold], class report, how)``."""
    try:
        songs, class_report = apply_task(all_songs, task)
        sp = cfg.split
        split, how = assign_splits(songs, sp.val_fraction, sp.test_fraction, sp.seed)
    except (TaskError, SplitError) as exc:
        raise SearchFailed(str(exc)) from None
    songs["split"] = split
    k = auto_folds(sp.folds, int((songs["split"] != "test").sum()))
    if k:
        # Cross-validation on the songs outside the test split: train and val become folds.
        dev = songs["split"] != "test"
        songs.loc[dev, "split"] = "train"
        try:
            folds = song_folds(songs[dev], k, sp.seed)
        except SplitError as exc:
            raise SearchFailed(str(exc)) from None
        songs["fold"] = -1
        songs.loc[dev, "fold"] = folds
        how += f", {k}-fold cross-validation" + (
            f" (split.folds auto: fewer than {AUTO_FOLDS_BELOW} non-test songs)" if sp.folds == "auto" else "")
    return songs, class_report, how


def prepare(cfg: SearchConfig) -> dict[str, Any]:
    """The trial data of the first task, as a search would make it (for benchmarks).

    Returns:
        ``{"trial": {kind: TrialData or folds}, "test": ..., "classes": ..., "groups": ...}``.
    """
    results = Path(cfg.output.results_dir).expanduser().resolve()
    songs, rows, table, _ = load_collection(cfg, results)
    songs, _, _ = split_songs(cfg, TaskSpec.from_config(cfg.tasks[0]), songs)
    return {**_split_arrays(cfg, songs, rows, table), "groups": _groups(cfg)}


def _library_levels() -> None:
    """MLflow's, Optuna's and alembic's own INFO lines (tables created, study created, model
    registered) follow the root logger: under ``-q`` (WARNING) they stay off the console too."""
    if logging.getLogger().getEffectiveLevel() < logging.WARNING:
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ray_before_featurizing(cfg: SearchConfig) -> bool:
    """Whether Ray must start (and the cluster be checked) before the collection is read.

    A search on a cluster (``RAY_ADDRESS``), in a process whose Ray runs already, or asking for
    more than this machine could ever give (a GPU, more CPUs than it has) starts Ray first, so a
    request no node can serve fails before any audio is read. Otherwise the check cannot fail on
    the local Ray about to start, so the collection is read and featurized first (in this process
    when it is small, issue 16's fast start) and Ray starts for the trials after it. This only
    orders the steps: the check itself always runs on the real cluster.
    """
    ray = sys.modules.get("ray")
    if os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
        return True
    return cfg.resources.gpu > 0 or cfg.resources.cpu > (os.cpu_count() or 1)


def run_search(cfg: SearchConfig, promote: bool = False, resume: bool = False) -> list[dict[str, Any]]:
    """Run a validated search end to end: one Tune search and one registered model per task.

    The collection is read and featurized once; every task reuses the same features. Before any
    compute, the tracking server, the cluster's resources and the storage locations are checked.

    Args:
        cfg: the validated search.
        promote: register the new models as champions whatever their scores.
        resume: continue the interrupted search of the same name (``--resume``): each task's Tune
            experiment is restored with its Optuna searcher, and its MLflow parent run is reused.
            Tasks that had finished are not run again.

    Returns:
        One summary per task that ran (what the command line prints).
    """
    from genre_ray.tracking import TrackingError, check_reachable, default_tracking_uri

    t0 = time.perf_counter()
    _library_levels()
    results = Path(cfg.output.results_dir).expanduser().resolve()
    uri = cfg.tracking.uri or default_tracking_uri(results)
    try:
        check_reachable(uri)
    except TrackingError as exc:
        raise SearchFailed(str(exc)) from None
    with _one_at_a_time(results, cfg.name):
        return _search(cfg, results, uri, promote, resume, t0)


@contextmanager
def _one_at_a_time(results: Path, name: str) -> Iterator[None]:
    """Holds ``results/<name>/`` for one search while it runs.

    Two runs of one search at once (the same command in two terminals, or ``--resume`` twice) would
    write the same state file, leaderboard and Optuna journal, and could restore the same Tune
    experiment. The lock is the operating system's (``flock``): a killed run leaves none behind.

    Raises:
        SearchFailed: when another process runs a search of this name in this results folder.
    """
    from filelock import Timeout

    from genre_ray.storage import file_lock

    lock = file_lock(results / name / ".search", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SearchFailed(f"{results / name}: another search named {name!r} is running in this results folder "
                           f"(it holds {lock.lock_file}); wait for it to end, or give this one another name "
                           "(--name, or name: in the YAML)") from None
    try:
        yield
    finally:
        lock.release()


def _search(cfg: SearchConfig, results: Path, uri: str, promote: bool, resume: bool,
            t0: float) -> list[dict[str, Any]]:
    """:func:`run_search` once its tracking store answers and it holds its results folder."""
    started: list[bool] = []

    def start_ray() -> None:  # once: Ray, then the checks against the cluster it is
        if started:
            return
        started.append(True)
        ray_init(cfg)
        try:
            check_resources(cfg)
        except ResourceError as exc:
            raise SearchFailed(str(exc)) from None
        _check_shared_storage(cfg, results)

    if _ray_before_featurizing(cfg):
        start_ray()
    if cfg.model.left_out:
        log.info("models left out of the search: %s (they take none of the features %s)",
                 ", ".join(cfg.model.left_out), ", ".join(cfg.feature_kinds))
    songs, rows, table, skipped = load_collection(cfg, results, start_ray)
    cache = {"path": table.cache_path, "hit": table.cache_hit, "clips": len(table.clips), "files": len(rows)}
    summaries = []
    for task in cfg.tasks:
        out_dir = results / cfg.name if len(cfg.tasks) == 1 else results / cfg.name / task["name"]
        out_dir.mkdir(parents=True, exist_ok=True)
        _data_report(skipped, out_dir / "data_report.csv")
        summary = _run_task(cfg, TaskSpec.from_config(task), songs, rows, table, uri, results, out_dir,
                            promote, resume, start_ray=start_ray)
        if summary is None:  # --resume: this task had finished before the interruption
            continue
        summary.update(out_dir=str(out_dir), tracking_uri=uri, skipped=skipped, name=cfg.name, cache=cache,
                       search_space=cfg.source_file,
                       wall_s=time.perf_counter() - t0, study_journal=str(out_dir / STUDY_JOURNAL))
        write_summary(out_dir / "summary.md", summary)
        from genre_ray.search.report import best_so_far_png, write_param_importances

        write_param_importances(summary["leaderboard"], cfg.search.metric, cfg.mode,
                                out_dir / "param_importances.csv")
        best_so_far_png(summary["leaderboard"], cfg.search.metric, cfg.mode, out_dir / "best_so_far.png")
        summary["tracker"].finish_parent(
            {f"best_{cfg.search.metric}": summary["best_val"], "test_songs": summary["test_songs"],
             **{f"test_song_{k}": v for k, v in summary["test"].items()},
             **({"zero_shot_val_song_acc": summary["zero_shot"]["val_acc"],
                 "zero_shot_test_song_acc": summary["zero_shot"]["test_acc"]} if summary.get("zero_shot") else {}),
             **({"ensemble_val_song_acc": summary["ensemble"]["val"][0],
                 "ensemble_test_song_acc": summary["ensemble"]["test"]["acc"],
                 "ensemble_members": len(summary["ensemble"]["members"]),
                 "best_single_test_song_acc": summary["single"]["test"]["acc"]} if summary.get("ensemble") else {})},
            {"best_trial": summary["leaderboard"].loc[0, "trial_id"]},
            [out_dir / f for f in ("leaderboard.csv", "summary.md", "confusion_matrix.png", "splits.csv",
                                   "data_report.csv", "classes.csv", "param_importances.csv",
                                   "best_so_far.png", "per_class_report.csv", SUSPECTS_FILE)])
        _write_state(out_dir, {**_read_state(out_dir), "finished": True})
        summaries.append(summary)
    return summaries


def _run_task(cfg: SearchConfig, task: TaskSpec, all_songs: pd.DataFrame, rows: pd.DataFrame, table: Any, uri: str,
              results: Path, out_dir: Path, promote: bool, resume: bool = False, *,
              start_ray: Callable[[], None]) -> dict[str, Any] | None:
    """Label, split, search and register one genre task (None: resumed, and it had finished).

    ``start_ray`` (:func:`run_search`'s, once per search) starts Ray for the trials once the task is
    known to run: a ``--resume`` of a finished search answers without one.
    """
    from genre_ray.tracking import Tracker, TrackingError, git_commit

    try:
        tracker = Tracker(uri, cfg.tracking.experiment or task.name, artifact_root=results / "mlartifacts",
                          spool=out_dir / TRACKING_BACKLOG)
    except TrackingError as exc:
        raise SearchFailed(str(exc)) from None
    songs, class_report, how = split_songs(cfg, task, all_songs)
    class_report.to_csv(out_dir / "classes.csv", index=False)
    split_table = split_report(songs, songs["split"])
    sid = split_id(songs["song_id"], songs["split"])
    columns = ["song_id", "artist", "raw_label", "label", "split", *(["fold"] if "fold" in songs else []), "path"]
    songs[columns].to_csv(out_dir / "splits.csv", index=False)
    arrays = _split_arrays(cfg, songs, rows, table)
    split_table.loc["clips"] = [arrays["clips"][name] for name in split_table.columns]
    log.info("task %s: songs per split (%s):\n%s", task.name, how, split_table.to_string())

    tags = {"git_commit": git_commit(), "data_fingerprint": table.info["cache_key"],
            "feature_hash": table.info["cache_key"], "split_id": sid, "split_method": how,
            "genre_ray.task": task.name}
    params = {"search_space": cfg.source_file, "model": ",".join(cfg.model_names), "task": task.name,
              **{f"features.{k}": v for k, v in cfg.feature_settings().items()},
              **{f"search.{k}": v for k, v in cfg.search.items()}, **{f"resources.{k}": v for k, v in
                                                                      cfg.resources.items()},
              "songs": len(songs), "classes": len(arrays["classes"])}
    storage = storage_location(cfg, results)
    state = _resume_state(cfg, out_dir, sid) if resume else None
    if state is not None and state.get("finished"):
        try:
            logged = tracker.replay()  # what an away tracking server missed, kept by the finished search
        except TrackingError as exc:
            raise SearchFailed(str(exc)) from None
        if logged:
            log.warning("task %s: the search %s had finished; logged the %d MLflow calls its tracking server "
                        "missed", task.name, state["run_name"], logged)
        else:
            log.warning("task %s: the search %s had finished (MLflow run %s); nothing to resume", task.name,
                        state["run_name"], state.get("parent_run_id"))
        return None
    journal = out_dir / STUDY_JOURNAL
    try:  # before any run is opened: a journal that cannot be used stops the search with nothing changed
        study = study_storage(journal)
        if state is not None:
            check_study(study, state["run_name"], cfg)
    except StudyJournalError as exc:
        raise SearchFailed(str(exc)) from None
    # Before anything changes: Tune would start over, and the finished trials' runs be dropped.
    if state is not None:
        _check_tune_folder(state, storage, finished_trials(study, state["run_name"]))
    if state is not None and (cut := cut_snapshot_of(state["experiment"])) is not None:
        raise SearchFailed(
            f"--resume: Tune's last snapshot of {state['run_name']} was cut short by the interruption ({cut} "
            "is empty or incomplete: Tune copies it to its storage without an atomic write), so Tune cannot "
            f"restore its trials. The trials it finished stay in MLflow under parent run "
            f"{state.get('parent_run_id')}; run without --resume to start the search again")
    if state is not None:
        for folder in repair_trial_results_of(state["experiment"]):
            log.warning("task %s: %s/result.json was cut short by the interruption; written again from what "
                        "survived of the trial's results", task.name, folder)
    start_ray()  # Ray for the trials (a small collection's features needed none)
    if state is None:
        run_name = f"{cfg.name}-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracker.start_parent(run_name, params, tags)
        experiment = join(storage, run_name)
        _write_state(out_dir, {"run_name": run_name, "experiment": experiment, "parent_run_id": tracker.parent_id,
                               "tracking_uri": uri, "split_id": sid, "config": _config_fingerprint(cfg),
                               "started": time.time(), "finished": False})
    else:
        run_name, experiment = state["run_name"], state["experiment"]
        if state.get("parent_run_id"):
            try:
                tracker.resume_parent(state["parent_run_id"])
            except TrackingError as exc:
                raise SearchFailed(str(exc)) from None
    from genre_ray.search.trial_runs import stop_signals

    # trial_data: this task's trial data leaves the object store when its fit is over.
    with trial_data(arrays["trial"]) as data, stop_signals(run_name) as interrupted:
        if state is not None and can_restore(experiment):
            log.info("task %s: resuming %s from %s (Optuna searcher, ASHA and trials restored)", task.name,
                     run_name, experiment)
            with warnings.catch_warnings():  # a trial started again reports its epochs again; Optuna keeps the first
                warnings.filterwarnings("ignore", r"The reported value is ignored because this `step=", UserWarning)
                grid = resume_fit(cfg, data, tracker, experiment, _groups(cfg))
        else:
            if state is not None:
                log.info("task %s: %s never reached its first Tune snapshot; starting its trials", task.name,
                         run_name)
            grid = tuner(cfg, data, tracker, storage, run_name, _groups(cfg), journal=journal).fit()
    board, by_trial = leaderboard(grid, cfg)
    board.to_csv(out_dir / "leaderboard.csv", index=False)
    if signum := interrupted():
        done = finished_trials(study, run_name)
        tracker.finish_parent({}, {"outcome": "interrupted"}, [out_dir / "leaderboard.csv"], "KILLED")
        how = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"stopped ({signal.Signals(signum).name})"
        raise SearchInterrupted(
            signum, f"task {task.name}: the search {run_name} was {how} with {done} of its "
            f"{cfg.search.num_samples} trials finished; Tune saved its state. Nothing was scored on the test "
            f"songs or registered. Run the same command with --resume to go on ({out_dir / 'leaderboard.csv'} "
            "has the trials so far)")
    metric = cfg.search.metric
    if board.empty or pd.isna(board.loc[0, f"best_{metric}"]):
        tracker.finish_parent({}, {"outcome": "all trials failed"}, [out_dir / "leaderboard.csv"], "FAILED")
        raise SearchFailed(f"task {task.name}: every trial failed; see the error column of "
                           f"{out_dir / 'leaderboard.csv'}")
    best = _best_with_checkpoint(board, by_trial, metric, cfg.mode)
    summary = _finish(cfg, task.name, best, board, by_trial, arrays, tracker, out_dir, sid, promote,
                      table.info["cache_key"])
    summary["zero_shot"] = zs = zero_shot(cfg, arrays)
    if zs is not None:  # a row of its own below the trials: it needs no training, so it is never chosen
        row = {"rank": len(board) + 1, "trial_id": f"zero-shot ({zs['kind']} tags)", f"best_{metric}":
               zs["val_acc"] if metric == "val_song_acc" else np.nan, "stopped": "no training",
               "model.name": "zero-shot", "features.kind": zs["kind"]}
        pd.concat([board, pd.DataFrame([row])], ignore_index=True).to_csv(out_dir / "leaderboard.csv",
                                                                          index=False)
    summary.update(
        leaderboard=board, metric=metric, split_table=split_table, split_method=how, task=task.name, split_id=sid,
        tracker=tracker,
        trials={"total": len(board), "early": int((board["stopped"] == "stopped early by ASHA").sum()),
                "errors": int((board["stopped"] == "error").sum())},
        resumed=state is not None,
        disk={"experiment": describe(experiment), "experiment_bytes": disk_usage(experiment),
              "checkpoints": _count_checkpoints(experiment),
              "cache_bytes": sum(disk_usage(c) for c in str(table.cache_path).split(", "))})
    return summary


def _count_checkpoints(experiment: str) -> int:
    """Checkpoint folders left in the experiment (best and last per trial at most)."""
    import pyarrow.fs as pafs

    from genre_ray.storage import filesystem

    fs, path = filesystem(experiment)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return 0
    return sum(1 for f in found if f.type == pafs.FileType.Directory and f.base_name.startswith("checkpoint_"))


def _checkpoint_of(result: Any, metric: str, mode: str) -> Any:
    """A trial's best checkpoint, else its last; None when it kept none."""
    try:
        checkpoint = result.get_best_checkpoint(metric, mode)
    except RuntimeError:  # Tune lists none for this trial (e.g. one restored after a lost node)
        checkpoint = None
    return checkpoint or result.checkpoint


def _best_with_checkpoint(board: pd.DataFrame, by_trial: dict[str, Any], metric: str, mode: str) -> Any:
    """The best trial of the leaderboard that left a checkpoint to score on the test songs."""
    for rank, trial_id in enumerate(board["trial_id"]):
        result = by_trial[trial_id]
        if pd.notna(board.loc[rank, f"best_{metric}"]) and _checkpoint_of(result, metric, mode) is not None:
            if rank:
                log.warning("the %d best trial(s) left no checkpoint; scoring trial %s (rank %d) on the test songs",
                            rank, trial_id, rank + 1)
            return result
    raise SearchFailed(f"no trial left a checkpoint in {board.attrs.get('storage', 'the Tune storage')}; "
                       "see the leaderboard's error column")


STATE_FILE = "search_state.json"


def storage_location(cfg: SearchConfig, results: Path) -> str:
    """Tune's storage: ``search.storage_path`` (a folder or an ``s3://`` / ``gs://`` URI), else ``<results>/ray``."""
    where = cfg.search.storage_path
    if where and is_uri(where):
        return str(where)
    return str(Path(where or results / "ray").expanduser().resolve())


def _check_shared_storage(cfg: SearchConfig, results: Path, hosts: int | None = None) -> None:
    """On a cluster of several hosts, refuse storage that only this node can see.

    Tune's trial folders, the feature cache (written by Ray Data tasks on any node) and the audio
    (decoded on any node) must be where every node reads the same thing: a URI or a shared
    (NFS, Lustre...) folder. Nodes on one host share its disk, so a single machine passes.
    """
    if hosts is None:
        import ray

        from genre_ray.search.tuning import AUTOSCALER_CONFIG, autoscaling_worker_types

        hosts = len({n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive", True)})
        if hosts <= 1 and autoscaling_worker_types(AUTOSCALER_CONFIG):
            hosts = 2  # a `ray up` cluster: the autoscaler will add worker hosts
    if hosts <= 1:
        return
    places = {"search.storage_path": storage_location(cfg, results),
              "features.cache_dir": str(cfg.features.cache_dir or results / "cache")}
    if cfg.data.source != "demo" and cfg.data.path:
        places["data.path"] = str(cfg.data.path)
    for key, where in places.items():
        if node_local(where):
            raise SearchFailed(f"{key} {describe(where)} is on this node's own disk, but the Ray cluster spans "
                               f"{hosts} hosts whose tasks must all reach it; set {key} to an s3:// or gs:// URI "
                               "or a folder on shared storage (NFS, Lustre...) mounted on every node")


def _config_fingerprint(cfg: SearchConfig) -> dict[str, Any]:
    """The settings a resumed search must share with the interrupted one (flattened, JSON-able)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = json.loads(json.dumps(value, default=str))

    doc = cfg.to_dict()
    for key in ("tracking", "output"):  # where things are written, not what is searched
        doc.pop(key, None)
    walk("", doc)
    return flat


def _read_state(out_dir: Path, strict: bool = False) -> dict[str, Any]:
    """The search's state file; ``{}`` when there is none, or (unless ``strict``) when it cannot be read.

    Raises:
        SearchFailed: with ``strict``, when the file is there but damaged (naming it and what to do).
    """
    path = out_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError(f"a JSON {type(state).__name__}, not an object")
        return state
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if not strict:
            return {}
        raise SearchFailed(f"--resume: {path} cannot be read ({exc}); it says which Tune experiment and MLflow "
                           "run to continue. Put back an intact copy and run --resume again, or move it aside "
                           "and run without --resume to start a new search (the runs so far stay in MLflow)") from None


def _write_state(out_dir: Path, state: dict[str, Any]) -> None:
    tmp = out_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, default=str))
    tmp.replace(out_dir / STATE_FILE)


def _resume_state(cfg: SearchConfig, out_dir: Path, sid: str) -> dict[str, Any] | None:
    """The interrupted search's state, checked against this one; None when there is none to resume."""
    state = _read_state(out_dir, strict=True)
    if not state:
        log.warning("--resume: no interrupted search in %s (no %s); starting a new search", out_dir, STATE_FILE)
        return None
    if state.get("split_id") != sid:
        raise SearchFailed(f"--resume: the songs or their split changed since the search in {out_dir} started "
                           f"(split {state.get('split_id')} then, {sid} now); its trials are not comparable. "
                           "Run without --resume to start a new search")
    before, now = state.get("config", {}), _config_fingerprint(cfg)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        raise SearchFailed(f"--resume: the search's settings changed since it started ({', '.join(changed[:8])}"
                           f"{' ...' if len(changed) > 8 else ''}); resume with the same YAML and options, or run "
                           "without --resume to start a new search")
    return state


def _check_tune_folder(state: dict[str, Any], storage: str, finished: int) -> None:
    """Refuse to resume a search whose Tune folder is not where it was made, when trials finished.

    Without the folder Tune starts over, and the finished trials' MLflow runs would be dropped as
    stale. A folder moved with its results folder cannot be resumed where it is now either: Tune
    (Ray 2.60) restores its trials from there, but its search algorithm keeps the storage of the
    experiment it pickled, so the trials it starts after the restore would write to the old place.

    Raises:
        SearchFailed: naming where the folder was made, where it is now (if found), and what to do.
    """
    recorded, run_name = state["experiment"], state["run_name"]
    if finished == 0 or exists(recorded):  # nothing finished to lose, or in its place
        return
    here = join(storage, run_name)
    keep = (f"or run without --resume to start a new search (the {finished} finished trials stay in MLflow "
            f"under parent run {state.get('parent_run_id')})")
    if here != recorded and exists(here):
        raise SearchFailed(
            f"--resume: the results folder moved since {run_name} started: its Tune folder was made at "
            f"{describe(recorded)} and is now at {describe(here)}. Tune would write the trials it starts next "
            f"to the old place, so move the folder back ({describe(Path(here).parent)} to "
            f"{describe(Path(recorded).parent)}, with the rest of the results folder) and run --resume there; {keep}")
    raise SearchFailed(
        f"--resume: Tune's folder of {run_name} is missing ({describe(recorded)}, where it was made"
        f"{'' if here == recorded else f', is not there, nor is {describe(here)}'}), but {finished} of its "
        f"trials finished (its study journal says so): without the folder Tune would start over. Put the folder "
        f"back and run --resume again; {keep}")


def _groups(cfg: SearchConfig) -> dict[str, tuple[int, ...]]:
    """Row groups of the stacked feature (log-mel | MFCC | chroma), for the combined model's branches."""
    if "stacked" not in cfg.feature_kinds:
        return {}
    return {"stacked": tuple(FeatureSettings.from_config(cfg.features, kinds=("stacked",)).groups("stacked"))}


def _feature_tag(cfg: SearchConfig, kind: str) -> str:
    """The settings that made the model's input, for the registered version's tags."""
    if kind in ("table", "image"):  # read from the source, not computed from audio
        return str({"kind": kind, **({"image_size": cfg.features.image_size} if kind == "image" else {})})
    return str(FeatureSettings.from_config(cfg.features, kinds=(kind,)).as_dict())


#: The Optuna study of every search of a task, one study per run (``optuna-dashboard <this file>``).
STUDY_JOURNAL = "optuna_study.journal"
TRACKING_BACKLOG = "tracking_backlog"  # what an away tracking server missed, for --resume

#: The genre mapping the zero-shot row uses when the YAML names none (data.mapping).
DEFAULT_MAPPING = Path(__file__).resolve().parents[1] / "search_spaces" / "mappings" / "gtzan10.yaml"


def zero_shot(cfg: SearchConfig, arrays: dict[str, Any]) -> dict[str, Any] | None:
    """The pretrained tagger's own answer, scored on the validation and test songs (no training).

    Needs a Million Song Dataset kind whose layer holds the taggram, and a genre mapping
    (``data.mapping``, else the shipped GTZAN mapping) that sends at least one tag to one of the
    task's classes; otherwise None.
    """
    from genre_ray.features.pretrained.zeroshot import (
        TAGGRAM_KINDS,
        tag_classes,
        taggram_columns,
        zero_shot_probs,
    )

    kind = next((k for k in cfg.feature_kinds if k in TAGGRAM_KINDS), None)
    cols = taggram_columns(kind, cfg.features.embedding_layer) if kind else None
    mapping = cfg.data.mapping or (DEFAULT_MAPPING if DEFAULT_MAPPING.is_file() else None)
    if kind is None or cols is None or mapping is None:
        return None
    classes = arrays["classes"]
    matrix = tag_classes(kind, classes, mapping)
    if not matrix.any():
        return None
    folds = arrays["trial"][kind]
    folds = folds if isinstance(folds, list) else [folds]
    val_y = np.concatenate([f.y_val_song for f in folds])
    val_p = np.concatenate([zero_shot_probs(f.x_val[:, cols], f.val_song, len(f.y_val_song), matrix) for f in folds])
    test = arrays["test"][kind]
    test_p = zero_shot_probs(test["x"][:, cols], test["song"], len(test["y_song"]), matrix)
    covered = [c for c, used in zip(classes, np.asarray(matrix.any(axis=0)), strict=True) if used]
    return {"kind": kind, "mapping": str(mapping), "classes_covered": covered,
            "val_acc": classification_scores(val_y, val_p)["acc"], "val_songs": int(len(val_y)),
            "test_acc": classification_scores(test["y_song"], test_p)["acc"],
            "test_songs": int(len(test["y_song"]))}


def _trial_id(result: Any) -> str:
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name)


def _refit(cfg: SearchConfig, best: Any, board: pd.DataFrame, arrays: dict[str, Any],
           tracker: Any) -> tuple[Any, dict[str, Any]] | None:
    """The best configuration trained again on every non-test song, as a tracked child run.

    A neural model trains for the epoch at which its trial's validation score peaked. Returns None
    (and the trial's own model is used) when a class has no song outside the test split.
    """
    from genre_ray.config.spaces import resolve
    from genre_ray.training.loop import refit, trial_spec

    plan = resolve(best.config)
    data = arrays["refit"](plan.kind)
    classes = arrays["classes"]
    missing = [c for i, c in enumerate(classes) if not (data.y_train == i).any()]
    if missing:
        log.warning("search.refit: class %s has no song outside the test split, so a refit could not learn it; "
                    "registering the best trial's own model instead (add songs of %s, or set search.refit: "
                    "false to silence this)", missing[0], missing[0])
        return None
    tid = _trial_id(best)
    row = board[board["trial_id"] == tid]
    epochs = int(row["best_epoch"].iloc[0]) if len(row) and pd.notna(row["best_epoch"].iloc[0]) else \
        int(min(plan.train.get("epochs", 1), cfg.search.max_epochs))
    songs = int(arrays["dev_songs"])
    run = f"refit-{tid}"
    tracker.start_trial(run, run, {**best.config, "refit.of_trial": tid, "refit.epochs": epochs,
                                   "refit.songs": songs, "refit.clips": len(data.y_train)}, kind="refit")
    t0 = time.perf_counter()
    log.info("refitting trial %s (%s on %s) on all %d non-test songs%s", tid, plan.model, plan.kind, songs,
             "" if plan.classical else f" for {epochs} epochs")
    try:
        model = refit(best.config, data, epochs, trial_spec(cfg, _groups(cfg)),
                      on_epoch=lambda m: tracker.log_trial_epoch(run, {"train_loss": m["train_loss"], "lr": m["lr"]},
                                                                 int(m["epoch"])))
    except Exception:
        tracker.end_trial(run, "FAILED", {"refit_of": tid})
        raise
    tracker.end_trial(run, "FINISHED", {"refit_of": tid, "refit_s": f"{time.perf_counter() - t0:.1f}"})
    return model, {"of_trial": tid, "epochs": None if plan.classical else epochs, "songs": songs,
                   "clips": int(len(data.y_train))}


def _candidates(board: pd.DataFrame, by_trial: dict[str, Any], metric: str, mode: str, n: int) -> list[Any]:
    """The ``n`` best trials of the leaderboard that left a checkpoint, best first."""
    out: list[Any] = []
    for rank, trial_id in enumerate(board["trial_id"]):
        if len(out) >= n:
            break
        result = by_trial.get(trial_id)
        if result is not None and pd.notna(board.loc[rank, f"best_{metric}"]) \
                and _checkpoint_of(result, metric, mode) is not None:
            out.append(result)
    return out


def _trial_model(cfg: SearchConfig, result: Any, arrays: dict[str, Any]) -> Any:
    """A trial's own model from its best checkpoint (the fold ensemble with folds)."""
    from genre_ray.config.spaces import resolve
    from genre_ray.training.loop import load_checkpoint_model

    checkpoint = _checkpoint_of(result, cfg.search.metric, cfg.mode)
    with checkpoint.as_directory() as d:
        return load_checkpoint_model(d, arrays["trial"][resolve(result.config).kind], result.config, _groups(cfg))


def _out_of_fold(cfg: SearchConfig, model: Any, kind: str, arrays: dict[str, Any]) -> np.ndarray:
    """Song probabilities that each fold's model gives its own validation songs, folds in order."""
    import torch

    from genre_ray.training.inference import song_probabilities
    from genre_ray.training.wrappers import fold_models

    data = arrays["trial"][kind]
    folds = data if isinstance(data, list) else [data]
    return np.concatenate([song_probabilities(m, d.x_val, d.val_song, len(d.y_val_song), torch.device("cpu"))[1]
                           for m, d in zip(fold_models(model, len(folds)), folds, strict=True)])


def _test_probs(model: Any, test: dict[str, Any]) -> np.ndarray:
    import torch

    from genre_ray.training.inference import song_probabilities

    return song_probabilities(model, test["x"], test["song"], len(test["y_song"]), torch.device("cpu"))[1]


def _song_scores(model: Any, test: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
    """Song probabilities on the test songs and their scores (clip accuracy too)."""
    import torch

    from genre_ray.training.inference import song_probabilities

    clip_probs, probs = song_probabilities(model, test["x"], test["song"], len(test["y_song"]), torch.device("cpu"))
    scores = classification_scores(test["y_song"], probs)
    return probs, {**{k: scores[k] for k in ("acc", "bacc", "f1", "auc") if k in scores},
                   "clip_acc": classification_scores(test["y"], clip_probs)["acc"]}


def _classifier(cfg: SearchConfig, config: dict[str, Any], model: Any, arrays: dict[str, Any],
                info: dict[str, Any]) -> Any:
    """A trained model as the song classifier that serving loads."""
    from genre_ray.config.spaces import resolve
    from genre_ray.serving import NON_AUDIO_KINDS, SongClassifier

    plan = resolve(config)
    model.probabilities = True
    audio = plan.kind not in NON_AUDIO_KINDS
    shape = tuple(arrays["test"][plan.kind]["x"].shape[1:])
    settings = FeatureSettings.from_config(cfg.features, kinds=(plan.kind,)) if audio else None
    info = {**info, "model": plan.model, "params": dict(plan.params)}
    if plan.kind == "image":
        info["image_size"] = cfg.features.image_size
    return SongClassifier(model, arrays["classes"], plan.kind, settings, plan.train.get("aggregation", "mean"),
                          info, shape)


def _ensemble(cfg: SearchConfig, board: pd.DataFrame, by_trial: dict[str, Any], arrays: dict[str, Any],
              ) -> dict[str, Any] | None:
    """Greedy ensemble selection over the best trials' out-of-fold song probabilities.

    Returns None with fewer than two candidates; else the choice, the candidates, their
    out-of-fold probabilities and their trial models.
    """
    from genre_ray.config.spaces import resolve
    from genre_ray.search.selection import greedy_ensemble

    metric = cfg.search.metric
    results = _candidates(board, by_trial, metric, cfg.mode, max(1, int(cfg.search.ensemble)))
    kept, models, oof = [], [], []
    for result in results:
        try:
            model = _trial_model(cfg, result, arrays)
            oof.append(_out_of_fold(cfg, model, resolve(result.config).kind, arrays))
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint leaves that trial out, not the search
            log.warning("ensemble: trial %s left out (%s: %s)", _trial_id(result), type(exc).__name__, exc)
            continue
        kept.append(result)
        models.append(model)
    if not kept:
        return None
    choice = greedy_ensemble(oof, arrays["oof_y"], rounds=int(cfg.search.ensemble_rounds))
    return {"choice": choice, "results": kept, "oof": oof, "models": models}


def _finish(cfg: SearchConfig, task: str, best: Any, board: pd.DataFrame, by_trial: dict[str, Any],
            arrays: dict[str, Any], tracker: Any, out_dir: Path, sid: str, promote: bool,
            cache_key: str) -> dict[str, Any]:
    """Choose the final model on validation (the best trial, or the ensemble of the best trials),
    score it once on the test songs and register it as a song classifier."""
    from genre_ray.config.spaces import resolve
    from genre_ray.search.selection import mix, score
    from genre_ray.serving.classifier import EnsembleClassifier

    metric = cfg.search.metric
    plan = resolve(best.config)
    test, classes = arrays["test"][plan.kind], arrays["classes"]
    refits: dict[str, tuple[Any, dict[str, Any]] | None] = {}

    def final_model(result: Any) -> tuple[Any, dict[str, Any] | None]:
        """The trial's configuration refitted on every non-test song, or its own model."""
        tid = _trial_id(result)
        if cfg.search.refit and tid not in refits:
            refits[tid] = _refit(cfg, result, board, arrays, tracker)
        if refits.get(tid) is not None:
            return refits[tid]  # type: ignore[return-value]
        return _trial_model(cfg, result, arrays), None

    model, refit_info = final_model(best)
    scored = ((f"the best configuration refitted on all {refit_info['songs']} non-test songs"
               + ("" if plan.classical else f" ({refit_info['epochs']} epochs)")) if refit_info is not None
              else f"the best trial's own model ({arrays['selected_trained_on']})")
    probs, scores = _song_scores(model, test)
    ens = _ensemble(cfg, board, by_trial, arrays)  # with search.ensemble <= 1: only the best trial's out-of-fold
    own = ens is not None and _trial_id(ens["results"][0]) == _trial_id(best)
    single = {"trial_id": _trial_id(best),
              "val": score(ens["oof"][0], arrays["oof_y"]) if own and ens is not None else None,
              "test": scores}
    ensemble: dict[str, Any] | None = None
    oof_final = ens["oof"][0] if own and ens is not None else None
    info = {"task": task, "registered_model": cfg.tracking.registered_model or f"genre-{task}",
            "search": cfg.name, "split_id": sid, "feature_cache_key": cache_key}
    if ens is not None and len(ens["choice"].weights) > 1:
        choice, results = ens["choice"], ens["results"]
        members = [(results[i], w) for i, w in choice.weights.items()]
        member_ids = [_trial_id(r) for r, _ in members]
        ensemble = {"members": [{"trial_id": t, "weight": round(w, 4), "model": resolve(r.config).model,
                                 "kind": resolve(r.config).kind}
                                for t, (r, w) in zip(member_ids, members, strict=True)],
                    "val": choice.ensemble_score, "best_single_val": choice.best_score,
                    "chosen": choice.beats_best, "candidates": len(results)}
        if choice.beats_best:  # the members' final models (refitted), mixed: this is what is registered
            finals = [final_model(r) for r, _ in members]
            mixed = mix([_test_probs(m, arrays["test"][resolve(r.config).kind])
                         for (m, _), (r, _) in zip(finals, members, strict=True)],
                        dict(enumerate(choice.weights.values())))
            ensemble["test_from"] = "the members' final models" + (" (refitted)" if cfg.search.refit else "")
        else:  # reported beside the single model, from the trials' own models (no refit spent on it)
            mixed = mix([_test_probs(ens["models"][i], arrays["test"][resolve(results[i].config).kind])
                         for i in choice.weights], dict(enumerate(choice.weights.values())))
            ensemble["test_from"] = "the trials' own models (not refitted: the ensemble was not chosen)"
        full = classification_scores(test["y_song"], mixed)
        ensemble["test"] = {k: full[k] for k in ("acc", "bacc", "f1", "auc") if k in full}
        oof_final = mix(ens["oof"], choice.weights) if choice.beats_best else oof_final
        if choice.beats_best:
            log.info("ensemble of %d trials (%s) beats the best trial on validation (song accuracy %.3f vs %.3f, "
                     "log loss %.3f vs %.3f); registering the ensemble", len(members), ", ".join(member_ids),
                     choice.ensemble_score[0], choice.best_score[0], choice.ensemble_score[1], choice.best_score[1])
            classifier: Any = EnsembleClassifier(
                [_classifier(cfg, r.config, m, arrays, {**info, "trial_id": t})
                 for (m, _), (r, _), t in zip(finals, members, member_ids, strict=True)],
                [w for _, w in members], {**info, "model": "ensemble", "members": ensemble["members"]})
            probs, scores = mixed, {**ensemble["test"]}
            scored = (f"an ensemble of {len(members)} trials ({', '.join(member_ids)})"
                      + (f", each refitted on all {arrays['dev_songs']} non-test songs" if cfg.search.refit else ""))
    if ensemble is None or not ensemble["chosen"]:
        classifier = _classifier(cfg, best.config, model, arrays, {**info, "trial_id": _trial_id(best)})
    classifier.info["test_song_acc"] = scores["acc"]
    suspects = _suspects(cfg, arrays, oof_final, ens, out_dir)
    baseline = majority_baseline(arrays["y_dev"], test["y_song"], len(classes))
    confusion_png(test["y_song"], probs.argmax(1), classes, out_dir / "confusion_matrix.png",
                  f"{cfg.name}: test split, {len(test['y_song'])} songs, accuracy {scores['acc']:.3f}")
    per_class_report(test["y_song"], probs.argmax(1), classes).to_csv(out_dir / "per_class_report.csv",
                                                                       index_label="class")
    name = info["registered_model"]
    chosen_ensemble = ensemble is not None and ensemble["chosen"]
    refitted = bool(refits) and all(r is not None for r in refits.values())
    tags = {"search": cfg.name, "model": "ensemble" if chosen_ensemble else plan.model, "refit": str(refitted).lower()}
    if chosen_ensemble and ensemble is not None:
        tags["members"] = json.dumps(ensemble["members"])
        tags["input"] = "audio (path, or waveform + sample_rate) -> each member's clips" if classifier.audio \
            else f"{plan.kind} rows, float32"
    else:
        shape = tuple(test["x"].shape[1:])
        tags["input"] = (f"audio (path, or waveform + sample_rate) -> {plan.kind} clips {shape}" if classifier.audio
                         else f"{plan.kind} clips {shape}, float32")
        if not classifier.audio:  # an audio model's tag is the classifier's own: its FeatureSettings as JSON
            tags["feature_settings"] = _feature_tag(cfg, plan.kind)
    registered = tracker.register_model(classifier, name, scores["acc"], sid, tags, promote=promote)
    return {"best_config": dict(best.config), "best_val": float(board.loc[0, f"best_{metric}"]),
            "scored_model": scored, "refit": refit_info, "single": single, "ensemble": ensemble,
            "suspects": suspects,
            "test": scores, "test_songs": int(len(test["y_song"])), "test_clips": int(len(test["y"])),
            "baseline": baseline, "registered": registered, "classes": classes,
            "demo": asdict(DemoSpec(**cfg.data.demo)) if cfg.data.source == "demo" else None}


SUSPECTS_FILE = "suspect_labels.csv"


def _suspects(cfg: SearchConfig, arrays: dict[str, Any], oof: np.ndarray | None, ens: dict[str, Any] | None,
              out_dir: Path) -> dict[str, Any] | None:
    """``suspect_labels.csv``: the songs whose label the final model's out-of-fold predictions contradict."""
    from genre_ray.search.selection import suspect_labels

    if oof is None:
        return None
    votes = np.stack([p.argmax(1) for p in ens["oof"]]) if ens is not None else None
    table = suspect_labels(arrays["oof_songs"], oof, arrays["oof_y"], arrays["classes"], votes)
    table.to_csv(out_dir / SUSPECTS_FILE, index=False)
    return {"path": str(out_dir / SUSPECTS_FILE), "count": len(table), "songs": len(arrays["oof_y"]),
            "top": table.head(5).to_dict("records")}
