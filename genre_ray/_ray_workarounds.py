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
  MLflow runs; a ``tuner.pkl`` cut short made ``Tuner.restore`` fail with an unpickling traceback.
  No upstream issue was found; ``tests/test_resume.py`` holds the check to Tune's file names.
- :func:`repair_trial_results`: the same copy cuts a finished trial's ``result.json`` (seen in
  ``tests/test_resume.py``: 0 bytes beside a whole ``progress.csv``), and the restored search then
  read no results for the trial; it is written again from what survived.
- :func:`quiet_checkpoint_lines` and :func:`quiet_progress_notice`: console lines that only a
  logger of an internal module carries (Tune's line per saved checkpoint, Ray Data's notice that its
  bars are off). Should Ray rename the module, the lines come back and nothing else changes.
"""

from __future__ import annotations

import gc
import json
import logging
import pickletools
import re
from collections import deque
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


def _reads_back(data: bytes) -> bool:
    """Whether a snapshot file is whole: a pickle that runs to its STOP at its last byte (read opcode
    by opcode with :mod:`pickletools`: nothing is built or imported), else JSON that parses. By
    content, not name: Tune's ``search_gen_state-*.json`` is a pickle."""
    try:
        if not data.startswith(b"\x80"):  # a pickle of protocol 2 or later opens with PROTO
            json.loads(data)
            return True
        last = deque(pickletools.genops(data), maxlen=1)  # raises at a cut; ends at STOP
        return bool(last) and last[0][0].name == "STOP" and last[0][2] == len(data) - 1
    except ValueError:  # cut inside a value, no STOP, nothing at all, or not JSON
        return False


def cut_snapshot(fs: Any, experiment: str) -> str | None:
    """The file of the Tune experiment folder ``experiment`` (on the pyarrow filesystem ``fs``)
    that a restore would read and that cannot be read back whole, or None when all are whole or absent.

    Tune names a run's snapshot ``experiment_state-<start time>.json``, with its searcher's state in
    ``searcher-state-<start time>.pkl`` and its search generator's in
    ``search_gen_state-<start time>.json`` (a pickle too), and restores from the newest (one per run of the driver);
    ``tuner.pkl``, written when the experiment starts, holds the Tuner itself.
    """
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
    except OSError:
        return None
    names = {i.base_name for i in infos if i.type == pafs.FileType.File}
    states = sorted(n for n in names if re.fullmatch(r"experiment_state-.+\.json", n))
    read = ["tuner.pkl"]
    if states:
        stamp = states[-1][len("experiment_state-"):-len(".json")]
        read += [states[-1], f"searcher-state-{stamp}.pkl", f"search_gen_state-{stamp}.json"]
    for name in (n for n in read if n in names):
        try:
            with fs.open_input_stream(f"{experiment}/{name}") as f:
                data = f.read()
        except OSError:
            return f"{experiment}/{name}"
        if not _reads_back(data):
            return f"{experiment}/{name}"
    return None


def _read_text(fs: Any, path: str) -> str | None:
    """A text file on ``fs``; None when it cannot be read (absent, or storage away)."""
    try:
        with fs.open_input_stream(path) as f:
            return f.readall().decode("utf-8", errors="replace")
    except OSError:
        return None


def _complete_lines(text: str) -> list[str]:
    """The lines of ``text`` that were written whole (a kill can cut the last one off)."""
    lines = text.split("\n")
    return [line for line in lines[:-1] if line.strip()]  # the part after the last newline is cut or empty


def _json_rows(text: str) -> list[str] | None:
    """The JSON lines of ``text`` that read back, or None when one before the last does not."""
    lines = _complete_lines(text)
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            return None
    return lines


def repair_trial_results(fs: Any, experiment: str) -> list[str]:
    """Rewrite each trial's ``result.json`` that an interruption cut short; the trial folders repaired.

    Tune's driver logs every result twice, to ``result.json`` (JSON lines) and ``progress.csv``, in
    its staging folder, and copies both to storage over the old copies at each sync, without an
    atomic write (the copy behind :func:`cut_snapshot`). A driver killed during the copy has left a
    finished trial's ``result.json`` empty while its ``progress.csv`` was whole. Tune prefers the
    JSON when it exists, so the restored search read no results for the trial: its leaderboard row
    said 0 epochs, "stopped early", no score. The file is written again from the copy with more
    complete rows (the CSV's columns are the JSON's, flattened with ``/`` as Tune flattens it when it
    reads the JSON), or without its cut last line.
    """
    import io

    import pandas as pd
    import pyarrow.fs as pafs

    from genre_ray.storage import put_file

    try:
        folders = [i.path for i in fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
                   if i.type == pafs.FileType.Directory]
    except OSError:
        return []
    repaired = []
    for folder in folders:
        text = _read_text(fs, f"{folder}/result.json")
        if text is None:  # not a trial folder, or Tune reads its CSV already
            continue
        rows = _json_rows(text)
        csv = _read_text(fs, f"{folder}/progress.csv") or ""
        csv_lines = _complete_lines(csv)
        csv_rows = max(len(csv_lines) - 1, 0)  # below its header
        if rows is not None and len(rows) >= csv_rows and text == "".join(f"{r}\n" for r in rows):
            continue  # whole, and as long as the CSV
        if csv_rows > len(rows or []):
            frame = pd.read_csv(io.StringIO("\n".join(csv_lines) + "\n"), dtype={"trial_id": str})
            fixed = frame.to_json(orient="records", lines=True)
        elif rows is not None:
            fixed = "".join(f"{r}\n" for r in rows)
        else:
            continue  # a line inside it is damaged and the CSV has no more: nothing better to write
        put_file(fs, f"{folder}/result.json", fixed.encode())
        repaired.append(folder)
    return repaired


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
    for line in (_read_text(fs, f"{trial_dir}/result.json") or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut off by the kill
            continue
        if isinstance(row, dict) and row.get("checkpoint_dir_name"):
            rows[row["checkpoint_dir_name"]] = row
    return rows


_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")
