"""MLflow layout, the champion policy and the registered pyfunc model, on a throwaway SQLite store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from genre_ray import serving
from genre_ray.config.spaces import TrialPlan
from genre_ray.features import FeatureSettings
from genre_ray.serving import SongClassifier
from genre_ray.tracking import CHALLENGER, CHAMPION, Tracker, TrackingError, default_tracking_uri, pyfunc
from genre_ray.training.loop import build
from genre_ray.training.wrappers import TrialData

SETTINGS = FeatureSettings(kinds=("logmel",), sample_rate=8000, clip_seconds=0.5, clip_overlap=0.0, n_fft=256,
                           hop_length=128, n_mels=8)


def tiny_classifier(seed: int = 0) -> SongClassifier:
    """An untrained 3-genre network on 8-mel clips: what registration needs, nothing more."""
    torch.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal((6, *SETTINGS.shape("logmel"))).astype(np.float32)
    y = np.arange(6) % 3
    mean, std = x.mean(axis=(0, 2), keepdims=True)[0], x.std(axis=(0, 2), keepdims=True)[0] + 1e-5
    data = TrialData(x, y, x, y, y, y[:3], ["blues", "jazz", "rock"], mean=mean, std=std)
    model = build(data, TrialPlan("cnn2d", "logmel", {"depth": 1, "width": 4}, {})).eval()
    return SongClassifier(model, data.classes, "logmel", SETTINGS, "mean",
                          {"split_id": "split-a", "feature_cache_key": "cache-1"})


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
    clf = tiny_classifier()
    tracker.start_parent("s1", {}, {})
    first = tracker.register_model(clf, "genre-unit", 0.80, "split-a", {"search": "s1"})
    assert first and first["alias"] == CHAMPION and first["version"] == "1"
    tracker.start_parent("s2", {}, {})
    second = tracker.register_model(clf, "genre-unit", 0.70, "split-a", {})
    assert second and second["alias"] == CHALLENGER and "does not beat" in second["reason"]
    tracker.start_parent("s3", {}, {})
    third = tracker.register_model(clf, "genre-unit", 0.95, "split-b", {})
    assert third and third["alias"] == CHALLENGER and "another split" in third["reason"]
    tracker.start_parent("s4", {}, {})
    fourth = tracker.register_model(clf, "genre-unit", 0.90, "split-a", {})
    assert fourth and fourth["alias"] == CHAMPION
    client = tracker.client
    version = client.get_model_version_by_alias("genre-unit", CHAMPION)
    assert str(version.version) == "4" and version.tags["decision"].startswith("test_song_acc 0.9000 beats")
    # the decision and both scores are on the version
    tags = version.tags
    assert tags["test_song_acc"] == "0.900000" and tags["compared_with_test_song_acc"] == "0.800000"
    assert tags["compared_with_version"] == "1"
    challenger = client.get_model_version("genre-unit", "2").tags
    assert challenger["test_song_acc"] == "0.700000"
    assert challenger["compared_with_test_song_acc"] == "0.800000"
    assert challenger["alias_at_registration"] == CHALLENGER
    v1 = client.get_model_version("genre-unit", "1")
    assert v1.tags["search"] == "s1" and "compared_with_version" not in v1.tags


def test_the_registered_version_is_a_pyfunc_song_classifier(tracker: Tracker) -> None:
    tracker.start_parent("s1", {}, {})
    tracker.register_model(tiny_classifier(), "genre-unit", 0.5, "split-a", {})
    version = tracker.client.get_model_version_by_alias("genre-unit", CHAMPION)
    tags = version.tags
    assert tags["kind"] == "logmel" and tags["classes"] == "blues,jazz,rock" and tags["aggregation"] == "mean"
    assert json.loads(tags["feature_settings"])["n_mels"] == 8
    assert tags["split_id"] == "split-a" and tags["feature_cache_key"] == "cache-1"
    model = mlflow.pyfunc.load_model("models:/genre-unit@champion")
    assert model.metadata.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    wave = np.sin(np.arange(12000) / 8000 * 2 * np.pi * 330).tolist()
    out = model.predict(pd.DataFrame({"waveform": [wave], "sample_rate": [8000]}))
    assert len(out) == 1 and out["genre"].iloc[0] in {"blues", "jazz", "rock"}
    assert np.isclose(out[["prob_blues", "prob_jazz", "prob_rock"]].to_numpy().sum(), 1.0)
    rows = pd.DataFrame({"waveform": [wave], "sample_rate": [8000]})
    timeline = model.predict(rows, params={"timeline": True})
    assert list(timeline["start_s"]) == [0.0, 0.5, 1.0]
    run_uri = f"runs:/{tracker.parent_id}/model"
    assert serving.load(run_uri).classes == ["blues", "jazz", "rock"]


def test_a_failed_registration_does_not_stop_the_search(tracker: Tracker, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pyfunc, "log_model", broken)
    tracker.start_parent("s1", {}, {})
    assert tracker.register_model(tiny_classifier(), "genre-unit", 0.5, "split-a", {}) is None
    assert not tracker.ok and "disk full" in caplog.text


def test_unreachable_server_fails_fast_with_the_uri() -> None:
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9/.*does not answer"):
        Tracker("http://127.0.0.1:9/", "unit")


def test_a_store_file_that_is_not_a_database_fails_fast_naming_it(tmp_path: Path) -> None:
    from genre_ray.tracking import check_reachable

    db = tmp_path / "mlflow.db"
    db.write_text("not a database")
    uri = f"sqlite:///{db}"
    with pytest.raises(TrackingError, match=rf"tracking.uri {uri}: MLflow cannot use this store "
                                            r"\(DatabaseError: file is not a database\).*move it aside"):
        check_reachable(uri)  # before Ray and before any audio, without importing MLflow
    with pytest.raises(TrackingError, match="file is not a database"):
        Tracker(uri, "unit")
    check_reachable(f"sqlite:///{tmp_path / 'new.db'}")  # no file yet: a new store is made


def test_a_store_mlflow_cannot_upgrade_stops_with_one_line(tmp_path: Path) -> None:
    """What a run met when another process was migrating the same new store at the same moment: an
    upgrade that finds its column already there. Recreated by rewinding a full store's schema version."""
    import sqlite3

    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "unit")
    con = sqlite3.connect(tmp_path / "mlflow.db")
    with con:  # a table missing (MLflow sets the store up) and a version before 'add jobs creator'
        con.execute("DROP TABLE experiment_tags")
        con.execute("UPDATE alembic_version SET version_num = '17e22815139b'")
    con.close()
    uri = f"sqlite:///{tmp_path}/./mlflow.db"  # another URI for the same file: MLflow keeps a store per URI
    with pytest.raises(TrackingError, match=r"MLflow cannot use this store \(OperationalError: duplicate column "
                                            r"name: creator\); if another run is creating or upgrading it"):
        Tracker(uri, "unit")


def test_failures_during_a_search_are_logged_not_raised(tracker: Tracker,
                                                        caplog: pytest.LogCaptureFixture) -> None:
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


def test_calls_missed_while_the_server_is_away_are_logged_when_it_answers(tracker: Tracker,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from genre_ray.tracking import runs as tracking

    real = {m: getattr(tracker.client, m) for m in ("create_run", "log_batch", "set_terminated")}

    def away(*args: object, **kwargs: object) -> None:
        raise ConnectionError("HTTPConnectionPool(host='127.0.0.1'): Max retries exceeded (Connection refused)")

    tracker.start_parent("outage", {"lr": 0.1}, {})
    for m in real:
        monkeypatch.setattr(tracker.client, m, away)
    tracker.start_trial("t1", "t1", {"lr": 0.1})  # the server is away: kept, with a stand-in run id
    tracker.log_trial_epoch("t1", {"val_song_acc": 0.5}, 1)
    tracker.end_trial("t1", "FINISHED", {"stopped": "completed"})
    assert tracker.ok and len(tracker.backlog) == 5 and tracker._children["t1"].startswith("pending-")
    for m, fn in real.items():  # it answers again
        monkeypatch.setattr(tracker.client, m, fn)
    monkeypatch.setattr(tracking, "PROBE_S", 0.0)
    tracker._next_probe = 0.0
    tracker.finish_parent({"best": 0.5}, {}, [])
    assert tracker.backlog == []
    [child] = tracker.client.search_runs([tracker.experiment_id], filter_string="tags.genre_ray.trial_id = 't1'")
    assert child.info.status == "FINISHED" and child.data.params["lr"] == "0.1"
    assert child.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert [m.value for m in tracker.client.get_metric_history(child.info.run_id, "val_song_acc")] == [0.5]


def test_what_is_still_missing_at_the_end_is_saved_and_replayed(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "unit", spool=tmp_path / "spool")
    first.start_parent("outage", {}, {})
    saved = first.client.log_batch

    def away(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(first.client, "log_batch", away)
    first.start_trial("t1", "t1", {"lr": 0.1})
    first.finish_parent({"best": 0.7}, {}, [])  # still away at the end
    assert (tmp_path / "spool" / "backlog.pkl").is_file()
    monkeypatch.setattr(first.client, "log_batch", saved)
    again = Tracker(uri, "unit", spool=tmp_path / "spool")  # --resume of the finished search
    assert again.replay() >= 2
    assert not (tmp_path / "spool" / "backlog.pkl").exists()
    parent = again.client.get_run(first.parent_id)
    assert parent.data.metrics["best"] == 0.7
    assert again.replay() is None  # nothing left
    (tmp_path / "spool" / "backlog.pkl").write_bytes(b"\x80\x05cut")  # a copy that stopped short
    with pytest.raises(TrackingError, match=r"spool/backlog.pkl cannot be read \(.*\); the MLflow calls it kept "
                                            r"are lost, but results/ has"):
        again.replay()


def test_registry_prints_stay_off_the_console_under_quiet(tracker: Tracker, capfd: pytest.CaptureFixture[str]) -> None:
    """-q sets the root logger to WARNING: MLflow's "Successfully registered model" / "Created version"
    prints (its eprint, not logging) follow it; at INFO they are shown as before."""
    from mlflow.utils import logging_utils

    root = logging.getLogger()
    level = root.level
    tracker.start_parent("quiet", {}, {})
    try:
        root.setLevel(logging.WARNING)
        assert tracker.register_model(tiny_classifier(), "genre-quiet", 0.5, "split-a", {})["version"] == "1"
        quiet = capfd.readouterr()
        root.setLevel(logging.INFO)
        assert tracker.register_model(tiny_classifier(), "genre-quiet", 0.6, "split-a", {})["version"] == "2"
        loud = capfd.readouterr()
    finally:
        root.setLevel(level)
    assert "registered model" not in (quiet.out + quiet.err) and "Created version" not in (quiet.out + quiet.err)
    assert "Created version '2'" in loud.out + loud.err
    assert logging_utils.MLFLOW_LOGGING_STREAM.enabled  # restored after the quiet registration


def test_a_new_local_store_is_a_copy_of_the_blank_one_and_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from genre_ray.tracking import blank

    monkeypatch.setenv("GENRE_RAY_CACHE_DIR", str(tmp_path / "cache"))
    Tracker(f"sqlite:///{tmp_path / 'first.db'}", "unit")  # builds the blank store
    made = blank.blank_store()
    assert made.parent == tmp_path / "cache" and blank._is_blank(made)
    monkeypatch.chdir(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlflow"):
        second = Tracker(f"sqlite:///{tmp_path / 'second.db'}", "unit", artifact_root=tmp_path / "art")
    assert not [r for r in caplog.records if "Creating initial MLflow database tables" in r.getMessage()]
    default = second.client.get_experiment("0")  # MLflow made it again for this store, here and now
    assert default.name == "Default" and default.artifact_location.startswith(str(tmp_path))
    second.start_parent("search-1", {"model": "cnn2d"}, {})
    version = second.register_model(tiny_classifier(), "genre-unit", 0.5, "split-a", {})
    second.finish_parent({"test_song_acc": 0.5}, {}, [])
    assert version and version["alias"] == CHAMPION and version["version"] == "1"
    assert second.client.get_model_version_by_alias("genre-unit", CHAMPION).run_id == second.parent_id
    assert blank._is_blank(made)  # the copy was written, not the blank


def test_a_damaged_or_unwritable_blank_store_leaves_the_store_to_mlflow(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from genre_ray.tracking import blank

    monkeypatch.setenv("GENRE_RAY_CACHE_DIR", str(tmp_path / "cache"))
    damaged = tmp_path / "cache" / f"mlflow-{mlflow.__version__}-blank.db"
    damaged.parent.mkdir()
    damaged.write_bytes(b"not a database")
    assert blank.seed_sqlite_store(f"sqlite:///{tmp_path / 'a.db'}")  # rebuilt, then copied
    assert blank._is_blank(damaged) and not list(damaged.parent.glob(".tmp-*"))
    Tracker(f"sqlite:///{tmp_path / 'a.db'}", "unit")
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("GENRE_RAY_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert not blank.seed_sqlite_store(f"sqlite:///{tmp_path / 'b.db'}")
    assert not list(tmp_path.glob(".tmp-*"))
    tracker = Tracker(f"sqlite:///{tmp_path / 'b.db'}", "unit")  # MLflow migrates it, as before
    assert tracker.client.get_experiment_by_name("unit") is not None
    assert not blank.seed_sqlite_store(f"sqlite:///{tmp_path / 'b.db'}")  # never over an existing store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENRE_RAY_CACHE_DIR", "relative-cache")  # a relative folder is taken from here
    assert blank.seed_sqlite_store(f"sqlite:///{tmp_path / 'c.db'}")
    assert blank._is_blank(tmp_path / "relative-cache" / damaged.name)
