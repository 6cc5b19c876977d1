"""A resumed search whose snapshot names checkpoints that Tune deleted after writing it.

Tune deletes a beaten checkpoint as soon as a better one arrives but writes its experiment snapshot
only every few seconds; a driver killed in between leaves trials that name a deleted checkpoint.
These tests build that state with Tune's own ``Trial`` (no Ray cluster needed) and check that
:func:`genre_ray.search.trial_runs.repair_checkpoints` points each trial at the newest complete checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("ray")

from ray.train import Checkpoint, CheckpointConfig  # noqa: E402
from ray.train._internal.session import _TrainingResult  # noqa: E402
from ray.train._internal.storage import StorageContext  # noqa: E402
from ray.tune.execution.placement_groups import PlacementGroupFactory  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402

from genre_ray.search.trial_runs import StaleCheckpoints, repair_checkpoints  # noqa: E402


def _trial(tmp_path: Path) -> Trial:
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="trial_a")
    trial = Trial("train_trial", config={"lr": 0.01}, trial_id="a", storage=storage, stub=True,
                  placement_group_factory=PlacementGroupFactory([{"CPU": 1}]),
                  checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="val_song_acc",
                                                     checkpoint_score_order="max"))
    trial.create_placement_group_factory()  # as Tune's controller does when it adds a trial
    Path(storage.trial_fs_path).mkdir(parents=True)
    return trial


def _epoch(trial: Trial, epoch: int, acc: float, *, report: bool = True) -> Path:
    """One epoch as Tune records it: the checkpoint folder, then (if reported) its result row."""
    trial_dir = Path(trial.storage.trial_fs_path)
    name = f"checkpoint_{epoch - 1:06d}"
    (trial_dir / name).mkdir()
    (trial_dir / name / "state.pt").write_bytes(b"epoch %d" % epoch)
    if report:
        row = {"training_iteration": epoch, "epoch": epoch, "val_song_acc": acc, "checkpoint_dir_name": name}
        with (trial_dir / "result.json").open("a") as f:
            f.write(json.dumps(row) + "\n")
        trial.on_checkpoint(_TrainingResult(checkpoint=Checkpoint(str(trial_dir / name)), metrics=row))
    return trial_dir / name


def _restored(snapshot: tuple[str, str]) -> Trial:
    trial = Trial.from_json_state(snapshot[0], stub=True)
    trial.restore_run_metadata(snapshot[1])
    return trial


def _latest(trial: Trial) -> str:
    result = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    return Path(result.checkpoint.path).name if result is not None else "none"


def test_a_trial_whose_snapshot_names_a_deleted_checkpoint_resumes_from_the_newest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    trial = _trial(tmp_path)
    first = _epoch(trial, 1, 0.3)
    snapshot = trial.get_json_state()  # the last snapshot the killed driver wrote
    _epoch(trial, 2, 0.5)
    _epoch(trial, 3, 0.6)
    assert not first.exists()  # beaten, so Tune deleted it after the snapshot named it

    stale = _restored(snapshot)
    assert _latest(stale) == "checkpoint_000000"  # what Tune would try, and fail, to restore
    with caplog.at_level(logging.WARNING, logger="genre_ray.search"):
        assert repair_checkpoints(stale) is True
    assert _latest(stale) == "checkpoint_000002"
    latest = stale.run_metadata.checkpoint_manager.latest_checkpoint_result
    assert latest.metrics["training_iteration"] == 3  # Tune restarts its epoch count from here
    assert stale.storage.current_checkpoint_index == 2  # the next checkpoint is 000003: none overwritten
    assert "checkpoint_000000 (deleted since); it resumes from checkpoint_000002" in caplog.text
    # The repaired trial's snapshot keeps the repair (Tune re-serializes it).
    assert _latest(_restored(stale.get_json_state())) == "checkpoint_000002"
    # Tune's keep-best-and-last rule still holds: 000001 (beaten by 000002) is gone.
    kept = sorted(p.name for p in Path(stale.storage.trial_fs_path).glob("checkpoint_*"))
    assert kept == ["checkpoint_000002"]


def test_a_folder_cut_short_by_the_kill_is_not_resumed_from_nor_overwritten(tmp_path: Path) -> None:
    trial = _trial(tmp_path)
    _epoch(trial, 1, 0.3)
    snapshot = trial.get_json_state()
    _epoch(trial, 2, 0.5, report=False)  # saved, but the driver died before its result arrived

    stale = _restored(snapshot)
    assert repair_checkpoints(stale) is False
    assert _latest(stale) == "checkpoint_000000"
    assert stale.storage.current_checkpoint_index == 1  # its next checkpoint is 000002, a new folder


def test_a_trial_with_no_checkpoint_left_starts_again(tmp_path: Path) -> None:
    trial = _trial(tmp_path)
    first = _epoch(trial, 1, 0.3)
    snapshot = trial.get_json_state()
    for f in first.iterdir():
        f.unlink()
    first.rmdir()

    stale = _restored(snapshot)
    assert repair_checkpoints(stale) is True
    assert _latest(stale) == "none"


def test_an_intact_trial_is_left_alone_and_the_callback_runs_once(tmp_path: Path) -> None:
    trial = _trial(tmp_path)
    _epoch(trial, 1, 0.3)
    _epoch(trial, 2, 0.2)  # worse: the best (000000) and the last (000001) are both kept
    assert repair_checkpoints(trial) is False
    assert _latest(trial) == "checkpoint_000001"

    callback = StaleCheckpoints()
    trial_dir = Path(trial.storage.trial_fs_path)
    for f in (trial_dir / "checkpoint_000001").iterdir():
        f.unlink()
    (trial_dir / "checkpoint_000001").rmdir()
    callback.on_step_begin(0, [trial])  # first step: repaired
    assert _latest(trial) == "checkpoint_000000"
    _epoch(trial, 3, 0.1)
    callback.on_step_begin(1, [trial])  # later steps: the live driver's bookkeeping is trusted
    assert _latest(trial) == "checkpoint_000002"


def test_storage_that_cannot_be_listed_leaves_tune_s_bookkeeping_alone(tmp_path: Path) -> None:
    """A transient storage error must not make every checkpoint look lost (the trial would start over)."""
    import pyarrow.fs as pafs

    class Unlistable(pafs.PyFileSystem):
        def get_file_info(self, selector):  # noqa: ANN001, ANN202
            raise OSError("503 Slow Down")

    trial = _trial(tmp_path)
    _epoch(trial, 1, 0.3)
    trial.storage.storage_filesystem = Unlistable(pafs.FSSpecHandler(None))
    assert repair_checkpoints(trial) is False
    assert _latest(trial) == "checkpoint_000000"
