"""A whole search on a tiny generated collection: Ray Data, Tune + Optuna + ASHA, MLflow, results/."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from genre_ray.config import load_config

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "task": "e2e",
    "data": {"source": "demo", "demo": {"genres": 3, "songs_per_genre": 6, "seconds": 4.0}},
    "features": {"clip_seconds": 1.0, "clip_overlap": 0.0, "n_mels": 32, "batch_files": 4},
    "model": {"name": "cnn2d", "params": {"depth": {"int": [1, 2]}, "width": {"choice": [4, 8]},
                                          "dropout": 0.1, "batch_norm": True}},
    "train": {"lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": {"choice": [16, 32]}, "epochs": 3},
    # one trial at a time: Tune reuses one trial process (8 CPU-seconds of start-up each) for all three
    "search": {"num_samples": 3, "max_concurrent": 1, "grace_period": 1, "reduction_factor": 2,
               "max_epochs": 3},
    "split": {"folds": None},  # one validation split (tests/test_splits.py covers split.folds: auto)
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> dict:
    from genre_ray.search.runner import run_search

    results = tmp_path_factory.mktemp("results")
    space = results / "tiny.yaml"
    space.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "path": str(results / "demo")}}))
    overrides = {"output.results_dir": str(results), "tracking.uri": f"sqlite:///{results / 'mlflow.db'}"}
    first = run_search(load_config(space, overrides))
    assert len(first) == 1
    # A second search over the same audio, now with two tasks: reads the cache, one search per task.
    styles = sorted(p.name for p in (results / "demo").iterdir() if p.is_dir())
    tasks = [{"name": "e2e"}, {"name": "one-vs-rest", "positive": styles[0].upper(), "negative": "rest"}]
    second = run_search(load_config(space, {**overrides, "name": "tiny-again", "tasks": tasks}))
    return {"results": results, "first": first[0], "second": second[0], "ovr": second[1]}


@pytest.mark.slow
def test_results_folder_has_leaderboard_summary_and_confusion(searched: dict) -> None:
    out = Path(searched["first"]["out_dir"])
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 3
    for column in ("best_val_song_acc", "best_val_clip_acc", "best_val_song_f1", "epochs", "stopped", "wall_s",
                   "train.lr", "train.batch_size", "model.depth"):
        assert column in board.columns
    assert set(board["stopped"]) <= {"completed", "stopped early by ASHA"}
    summary = (out / "summary.md").read_text()
    n_test = searched["first"]["test_songs"]
    assert n_test == 3 and f"test split of {n_test} songs" in summary
    assert "genre-e2e" in summary and "Songs per class and split" in summary
    assert (out / "confusion_matrix.png").stat().st_size > 1000


@pytest.mark.slow
def test_no_song_in_two_splits_and_test_songs_never_reach_trials(searched: dict) -> None:
    out = Path(searched["first"]["out_dir"])
    splits = pd.read_csv(out / "splits.csv")
    assert splits["song_id"].is_unique
    assert (splits.groupby("label")["split"].nunique() == 3).all()


@pytest.mark.slow
def test_mlflow_has_parent_children_and_champion(searched: dict) -> None:
    uri = f"sqlite:///{searched['results'] / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("genre_ray.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("genre_ray.kind") == "trial"]
    assert len(parents) == 2 and len(children) == 6
    first_parent = min(parents, key=lambda r: r.info.start_time)
    mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == first_parent.info.run_id]
    assert len(mine) == 3
    assert all("train.lr" in c.data.params for c in mine)
    history = client.get_metric_history(mine[0].info.run_id, "val_song_acc")
    assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert "test_song_acc" in first_parent.data.metrics
    for tag in ("git_commit", "data_fingerprint", "feature_hash", "split_id"):
        assert tag in first_parent.data.tags
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/genre-e2e@champion")
    wave = np.sin(np.arange(3 * 22050) / 22050 * 2 * np.pi * 440).tolist()
    out = model.predict(pd.DataFrame({"waveform": [wave, wave], "sample_rate": [22050, 22050]}))
    probs = out.filter(like="prob_").to_numpy()
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert searched["first"]["registered"]["alias"] == "champion"
    assert searched["second"]["registered"]["alias"] in {"champion", "challenger"}


@pytest.mark.slow
def test_second_search_hits_the_feature_cache(searched: dict) -> None:
    assert not searched["first"]["cache"]["hit"]
    assert searched["second"]["cache"]["hit"]
    assert searched["second"]["cache"]["path"] == searched["first"]["cache"]["path"]


@pytest.mark.slow
def test_several_tasks_mean_one_search_and_one_model_each(searched: dict) -> None:
    ovr = searched["ovr"]
    assert ovr["task"] == "one-vs-rest" and len(ovr["classes"]) == 2 and "rest" in ovr["classes"]
    assert ovr["registered"]["name"] == "genre-one-vs-rest"
    assert Path(ovr["out_dir"]).name == "one-vs-rest"
    splits = pd.read_csv(Path(ovr["out_dir"]) / "splits.csv")
    assert set(splits["label"]) == set(ovr["classes"])


@pytest.mark.slow
def test_the_winner_is_refitted_on_every_non_test_song_and_that_model_is_registered(searched: dict) -> None:
    first = searched["first"]
    splits = pd.read_csv(Path(first["out_dir"]) / "splits.csv")
    dev = int((splits["split"] != "test").sum())
    assert first["refit"]["songs"] == dev and first["refit"]["of_trial"] == first["leaderboard"].loc[0, "trial_id"]
    board = first["leaderboard"]
    of_trial = board["trial_id"] == first["refit"]["of_trial"]
    assert first["refit"]["epochs"] == int(board.loc[of_trial, "best_epoch"].iloc[0])
    summary = (Path(first["out_dir"]) / "summary.md").read_text()
    assert f"refitted on all {dev} non-test songs" in summary
    client = mlflow.MlflowClient(f"sqlite:///{searched['results'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    refits = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("genre_ray.kind") == "refit"]
    # one per search of task e2e, or one per member when the search chose an ensemble of its best trials
    expected = sum(len(s["ensemble"]["members"]) if s["ensemble"] and s["ensemble"]["chosen"] else 1
                   for s in (first, searched["second"]))
    assert len(refits) == expected and all(r.info.status == "FINISHED" for r in refits)
    assert {r.data.params["refit.songs"] for r in refits} == {str(dev)}
    assert first["refit"]["of_trial"] in {r.data.params["refit.of_trial"] for r in refits}
    history = client.get_metric_history(refits[0].info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, int(refits[0].data.params["refit.epochs"]) + 1))
    version = client.get_model_version_by_alias("genre-e2e", "champion")
    assert version.tags["refit"] == "true"
