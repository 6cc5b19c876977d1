"""Every use of Ray's and Tune's private internals, in one place, each with the upstream issue.

Ray changes its private modules without notice; the tests named beside each workaround fail when
the behaviour it relies on changes (``tests/test_trial_data_release.py``,
``tests/test_stale_checkpoints.py``), and
``tests/test_architecture.py`` holds that no other module touches them.

- :func:`unpin`: Tune's ``with_parameters`` keeps its parameter registry in Ray's post-init hooks
  (the registry outliving its run is ray-project/ray#16609) and Ray pins a reference pickled
  outside a task's arguments for the worker's lifetime (``ray/_private/serialization.py``); no
  public call releases either (``ray._private.worker``).
- :func:`repair_checkpoints`: a driver killed between Tune's checkpoint deletions and its next
  experiment snapshot restores trials that name deleted checkpoints (ray-project/ray#30073); the
  trial's checkpoint manager is rebuilt through its private state and
  ``ray.train._internal.session._TrainingResult``.
- :func:`cut_snapshot`: Tune writes its experiment snapshot in the driver's staging folder and
  then copies it to the storage path with ``pyarrow.fs.copy_files``, which is not atomic: a
  driver killed during the copy leaves ``experiment_state-*.json`` and ``searcher-state-*.pkl``
  empty or cut short (seen in ``tests/test_resume.py``: both 0 bytes). ``Tuner.restore`` then
  finds no trials and starts the search over, and the resumed search dropped the finished trials'
  MLflow runs. No upstream issue was found; ``tests/test_resume.py`` holds the check to Tune's file
  names.
- :func:`quiet_checkpoint_lines` and :func:`quiet_progress_notice`: console lines that only a
  logger of an internal module carries (Tune's line per saved checkpoint, Ray Data's notice that its
  bars are off). Should Ray rename the module, the lines come back and nothing else changes.
"""

from __future__ import annotations

import gc
import json
import logging
import re
from typing import Any

log = logging.getLogger(__name__)


def quiet_checkpoint_lines() -> None:
    """In a trial: Tune logs a line per saved checkpoint (every epoch of every trial) at INFO, from
    ``ray.train._internal.storage``; the driver reports progress instead."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)


def quiet_progress_notice() -> None:
    """Ray Data warns once per process that its progress bars are off, from
    ``ray.data._internal.progress``; they are off because the commands show their own."""
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def cut_snapshot(fs: Any, experiment: str) -> str | None:
    """The newest snapshot file of the Tune experiment folder ``experiment`` (on the pyarrow
    filesystem ``fs``) that cannot be read back, or None when the snapshot is whole or absent.

    Tune names a run's snapshot ``experiment_state-<start time>.json`` with its searcher's state in
    ``searcher-state-<start time>.pkl``, and restores from the newest (one per run of the driver).
    """
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
    except OSError:
        return None
    sizes = {i.base_name: i.size for i in infos if i.type == pafs.FileType.File}
    states = sorted(n for n in sizes if re.fullmatch(r"experiment_state-.+\.json", n))
    if not states:
        return None
    newest = states[-1]
    searcher = "searcher-state-" + newest[len("experiment_state-"):-len(".json")] + ".pkl"
    if searcher in sizes and not sizes[searcher]:
        return f"{experiment}/{searcher}"
    try:
        with fs.open_input_stream(f"{experiment}/{newest}") as f:
            json.loads(f.read())
    except (OSError, ValueError):
        return f"{experiment}/{newest}"
    return None


def unpin(ref: Any) -> int:
    """Remove what Tune's ``with_parameters`` left holding ``ref``; returns the pins removed."""
    import ray
    import ray._private.worker as worker

    if not ray.is_initialized():  # Ray went down with the fit: nothing of it is left to free
        return 0
    hooks = worker._post_init_hooks
    hooks[:] = [h for h in hooks if not holds(h, ref)]
    gc.collect()  # handles in collectable cycles (a Tuner that failed) are not pins
    core = worker.global_worker.core_worker  # type: ignore[attr-defined]  # set when Ray connects
    counts = core.get_all_reference_counts()
    local = (counts.get(ref.hex().encode()) or counts.get(ref.binary()) or {}).get("local", 0)
    for _ in range(local - 1):  # one is ``ref`` itself, which frees the object when it goes
        core.remove_object_ref_reference(ref)
    log.debug("trial data %s: %d pins removed", ref.hex(), max(local - 1, 0))
    return max(local - 1, 0)


def holds(hook: Any, ref: Any) -> bool:
    """Whether one of Ray's post-init hooks is the flush of a ``with_parameters`` registry holding ``ref``."""
    references = getattr(getattr(hook, "__self__", None), "references", None)
    return isinstance(references, dict) and any(r is ref for r in references.values())


def repair_checkpoints(trial: Any) -> bool:
    """Make ``trial``'s checkpoint bookkeeping match its folder; True when it had to change.

    The checkpoints kept are the tracked ones still on storage, plus any newer one on storage whose
    result row (``result.json``, written by the driver after the checkpoint was saved) proves it
    complete. They are registered again in order, so the newest is the one the trial resumes from,
    Tune's keep-best-and-last rule applies to them, and the trial's next checkpoint gets a new name
    instead of overwriting one of them. A trial with none left starts again from its first epoch.
    """
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    manager = trial.run_metadata.checkpoint_manager
    fs, trial_dir = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    latest = manager.latest_checkpoint_result
    tracked = {r.checkpoint.path.rstrip("/"): r
               for r in [*manager._checkpoint_results, *([latest] if latest is not None else [])]}
    on_disk = _checkpoint_dirs(fs, trial_dir)
    if on_disk is None:  # storage unreadable now: Tune's own bookkeeping is left as it is
        return False
    newest_tracked = max((_index(p) for p in tracked), default=-1)
    newer = {p: i for p, i in on_disk.items() if p not in tracked and i > newest_tracked}
    if all(p in on_disk for p in tracked) and not newer:
        return False
    rows = _checkpoint_rows(fs, trial_dir) if newer else {}
    keep = {p: r for p, r in tracked.items() if p in on_disk}
    for path in newer:
        row = rows.get(path.rsplit("/", 1)[-1])
        if row is not None:
            keep[path] = _TrainingResult(checkpoint=Checkpoint(path, filesystem=fs), metrics=row)
    # Tune names the trial's next checkpoint from this index: past every folder, none overwritten
    # (a folder cut short by the kill has no result row; it is left alone, and not reused).
    trial.storage.current_checkpoint_index = max([trial.storage.current_checkpoint_index, *on_disk.values()])
    trial.invalidate_json_state()
    if keep.keys() == tracked.keys():
        return False
    manager._checkpoint_results, manager._latest_checkpoint_result = [], None  # rebuilt just below
    for path in sorted(keep, key=_index):
        manager.register_checkpoint(keep[path])
    trial.run_metadata.invalidate_cache()
    was = latest.checkpoint.path.rstrip("/") if latest is not None else ""
    now = manager.latest_checkpoint_result
    log.warning("trial %s: the interrupted run's snapshot named checkpoint %s (%s); it resumes from %s",
                trial.trial_id, was.rsplit("/", 1)[-1] or "none",
                "not the newest" if was in on_disk else "deleted since",
                now.checkpoint.path.rstrip("/").rsplit("/", 1)[-1] if now else "its first epoch")
    return True


def _index(path: str) -> int:
    match = _CHECKPOINT.search(path.rstrip("/"))
    return int(match.group(1)) if match else -1


def _checkpoint_dirs(fs: Any, trial_dir: str) -> dict[str, int] | None:
    """The trial's ``checkpoint_NNNNNN`` folders on storage: path -> index; None if unlistable."""
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    except OSError as exc:
        log.warning("cannot list %s (%s); its trial resumes from the checkpoint Tune's snapshot names",
                    trial_dir, exc)
        return None
    return {i.path.rstrip("/"): _index(i.path) for i in infos
            if i.type == pafs.FileType.Directory and _index(i.path) >= 0}


def _checkpoint_rows(fs: Any, trial_dir: str) -> dict[str, dict]:
    """The trial's reported results that came with a checkpoint: its folder name -> the result."""
    rows: dict[str, dict] = {}
    try:
        with fs.open_input_stream(f"{trial_dir}/result.json") as f:
            text = f.readall().decode("utf-8", errors="replace")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut off by the kill
            continue
        if isinstance(row, dict) and row.get("checkpoint_dir_name"):
            rows[row["checkpoint_dir_name"]] = row
    return rows


_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")
