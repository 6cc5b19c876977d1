"""MLflow layout and the champion policy, on a throwaway SQLite store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from genre_ray.tracking import CHALLENGER, CHAMPION, Tracker, TrackingError, default_tracking_uri


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.lin(x.flatten(1)), dim=-1)


@pytest.fixture()
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "unit", artifact_root=tmp_path / "art")


def test_parent_and_child_runs_with_step_metrics(tracker: Tracker) -> None:
    parent = tracker.start_parent("search-1", {"model": "cnn2d"}, {"git_commit": "abc"})
    tracker.start_trial("t1", "trial-t1", {"train.lr": 0.01})
    for step in (1, 2, 3):
        tracker.log_trial_epoch("t1", {"val_song_acc": 0.1 * step}, step)
    tracker.end_trial("t1", "FINISHED", {"stop_reason": "completed"})
    tracker.finish_parent({"test_song_acc": 0.9}, {"best_trial": "t1"}, [])
    client = tracker.client
    runs = client.search_runs([tracker.experiment_id])
    child = next(r for r in runs if r.info.run_id != parent)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.params["train.lr"] == "0.01"
    history = client.get_metric_history(child.info.run_id, "val_song_acc")
    assert [m.step for m in history] == [1, 2, 3]
    assert client.get_run(parent).data.metrics["test_song_acc"] == 0.9
    assert client.get_run(parent).info.status == "FINISHED"


def test_champion_moves_only_when_beaten_on_the_same_split(tracker: Tracker) -> None:
    example = np.zeros((2, 2, 3), np.float32)
    first = second = third = fourth = None
    tracker.start_parent("s1", {}, {})
    first = tracker.register_model(Tiny(), "genre-unit", example, 0.80, "split-a", {})
    assert first and first["alias"] == CHAMPION and first["version"] == "1"
    tracker.start_parent("s2", {}, {})
    second = tracker.register_model(Tiny(), "genre-unit", example, 0.70, "split-a", {})
    assert second and second["alias"] == CHALLENGER and "does not beat" in second["reason"]
    tracker.start_parent("s3", {}, {})
    third = tracker.register_model(Tiny(), "genre-unit", example, 0.95, "split-b", {})
    assert third and third["alias"] == CHALLENGER and "another split" in third["reason"]
    tracker.start_parent("s4", {}, {})
    fourth = tracker.register_model(Tiny(), "genre-unit", example, 0.90, "split-a", {})
    assert fourth and fourth["alias"] == CHAMPION
    version = tracker.client.get_model_version_by_alias("genre-unit", CHAMPION)
    assert str(version.version) == "4" and version.tags["decision"].startswith("test_song_acc 0.9000 beats")
    model = mlflow.pyfunc.load_model("models:/genre-unit@champion")
    assert model.predict(example).shape == (2, 3)
    assert model.predict(np.zeros((5, 2, 3), np.float32)).shape == (5, 3)


def test_unreachable_server_fails_fast_with_the_uri() -> None:
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9/.*does not answer"):
        Tracker("http://127.0.0.1:9/", "unit")


def test_failures_during_a_search_are_logged_not_raised(tracker: Tracker, caplog: pytest.LogCaptureFixture) -> None:
    tracker.start_parent("s", {}, {})

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("store went away")

    tracker.client.log_batch = broken  # type: ignore[method-assign]
    tracker.start_trial("t", "trial-t", {"a": 1})
    tracker.log_trial_epoch("t", {"m": 1.0}, 1)
    assert not tracker.ok and "store went away" in caplog.text


def test_default_uri_is_local_sqlite_unless_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert default_tracking_uri(tmp_path) == "http://example.invalid:5000"
