"""What the parent run holds besides the leaderboard: parameter importances and the best-so-far curve.

The report functions are checked on hand-made leaderboards (fast); one slow test checks that a
real search logs the files on its parent run, with its tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _mlflow_server import searched_store

from genre_ray.search.report import best_so_far, best_so_far_png, param_importances, write_param_importances


def _flat_board(n: int = 24, seed: int = 0) -> pd.DataFrame:
    """A one-model search where the score follows ``train.lr`` (log scale) and nothing else."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, -2, n)
    return pd.DataFrame({
        "rank": range(1, n + 1), "trial_id": [f"t{i:02d}" for i in range(n)],
        "model.name": "cnn2d", "model.depth": rng.integers(2, 5, n), "model.batch_norm": rng.random(n) < 0.5,
        "train.lr": lr, "train.optimizer": rng.choice(["adam", "adamw"], n), "train.epochs": 8,
        "best_val_song_acc": 1.0 - np.abs(np.log10(lr) + 3) / 2, "best_val_loss": rng.random(n),
        "epochs": 8, "wall_s": rng.uniform(5, 10, n), "stopped": "completed", "error": ""})


def _zoo_board() -> pd.DataFrame:
    """A conditional search: each model has its own parameters; spaces.py's merged copies are there."""
    rows: list[dict[str, Any]] = []
    for i in range(12):
        if i % 2:
            rows.append({"model.name": "svm", "model.svm.C": 0.1 * 10 ** (i / 4), "features.kind.svm":
                         ["stats", "gtzan57"][i % 4 == 1], "train.aggregation.classical": "vote",
                         "train.aggregation": "vote", "best_val_song_acc": 0.3 + 0.01 * i})
        else:
            rows.append({"model.name": "cnn2d", "model.cnn2d.depth": 2 + i % 3, "features.kind.cnn2d":
                         ["logmel", "mfcc"][i % 4 == 0], "train.aggregation": ["mean", "gru"][i % 4 == 0],
                         "train.lr": 1e-3 * (1 + i), "best_val_song_acc": 0.5 + 0.03 * (i % 3)})
        rows[-1]["features.kind"] = rows[-1].get("features.kind.svm") or rows[-1]["features.kind.cnn2d"]
    board = pd.DataFrame(rows)
    return board.assign(trial_id=[f"z{i}" for i in range(len(board))], wall_s=1.0, stopped="completed")


def test_importances_rank_the_parameter_that_drives_the_score_first() -> None:
    frame = param_importances(_flat_board(), "val_song_acc", "max")
    assert frame.loc[0, "param"] == "train.lr"
    assert frame["importance"].sum() == pytest.approx(1.0)
    assert (frame["trials"] == 24).all()
    dists = dict(zip(frame["param"], frame["distribution"], strict=True))
    assert dists["train.lr"].endswith(" log") and dists["model.depth"].startswith("int [")
    assert dists["model.batch_norm"] == "{False, True}" and dists["train.optimizer"] == "{adam, adamw}"
    assert "train.epochs" not in dists and "model.name" not in dists  # constants explain nothing
    assert "PED-ANOVA over 24 complete trials" in frame.attrs["method"]


def test_importances_of_a_conditional_zoo_score_each_parameter_where_it_exists() -> None:
    frame = param_importances(_zoo_board(), "val_song_acc", "max").set_index("param")
    assert frame.loc["model.name", "trials"] == 12
    assert frame.loc["model.svm.C", "trials"] == 6 and frame.loc["model.cnn2d.depth", "trials"] == 6
    assert frame.loc["train.aggregation", "trials"] == 6  # the svm trials' copy is not counted
    assert "features.kind" not in frame.index  # in a zoo it copies features.kind.<model>
    assert frame["importance"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda b: b.head(1), "1 complete trial(s); importances need at least 2"),
    (lambda b: b.assign(best_val_song_acc=0.5), "all 24 complete trials scored best_val_song_acc = 0.5"),
    (lambda b: b[["trial_id", "train.epochs", "best_val_song_acc"]], "no parameter took more than one value"),
    (lambda b: b.assign(stopped=["error"] * 23 + ["completed"]), "1 complete trial(s)"),
])
def test_nothing_to_attribute_gives_an_empty_frame_and_a_reason(edit: Any, reason: str,
                                                                 tmp_path: Path) -> None:
    frame = param_importances(edit(_flat_board()), "val_song_acc", "max")
    assert frame.empty and reason in frame.attrs["reason"]
    write_param_importances(edit(_flat_board()), "val_song_acc", "max", tmp_path / "imp.csv")
    assert reason in pd.read_csv(tmp_path / "imp.csv").loc[0, "note"]


def test_importances_csv_says_how_they_were_computed(tmp_path: Path) -> None:
    write_param_importances(_flat_board(), "val_song_acc", "max", tmp_path / "imp.csv")
    csv = pd.read_csv(tmp_path / "imp.csv")
    assert list(csv.columns) == ["param", "importance", "trials", "distribution", "note"]
    assert csv.loc[0, "param"] == "train.lr" and "PED-ANOVA" in csv.loc[0, "note"]


def test_best_so_far_follows_finishing_times() -> None:
    board = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "best_val_loss": [0.5, 0.9, 0.7, np.nan],
                          "wall_s": [10.0, 5.0, 5.0, 1.0], "finished_at": [1030.0, 1005.0, 1020.0, 1001.0],
                          "stopped": ["completed", "completed", "stopped early by ASHA", "error"]})
    curve = best_so_far(board, "val_loss", "min")
    assert list(curve["trial_id"]) == ["b", "c", "a"]  # the failed trial has no value
    assert list(curve["seconds"]) == [5.0, 20.0, 30.0]  # since the first start (b: 1005 - 5)
    assert list(curve["best"]) == [0.9, 0.7, 0.5]
    assert "since the first trial started" in curve.attrs["clock"]


def test_best_so_far_without_finishing_times_says_so(tmp_path: Path) -> None:
    board = _flat_board(6)
    curve = best_so_far(board, "val_song_acc", "max")
    assert np.allclose(curve["seconds"], board["wall_s"].cumsum())
    assert "finishing times not recorded" in curve.attrs["clock"]
    assert best_so_far_png(board, "val_song_acc", "max", tmp_path / "b.png").stat().st_size > 5000
    assert best_so_far_png(board.head(0), "val_song_acc", "max", tmp_path / "empty.png").exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> tuple[Path, dict[str, Any]]:
    return searched_store(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_parent_run_holds_the_report_files_and_the_tags(store: tuple[Path, dict[str, Any]]) -> None:
    import mlflow

    results, info = store
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    files = {f.path for f in client.list_artifacts(info["parent"])}
    assert {"leaderboard.csv", "param_importances.csv", "best_so_far.png", "confusion_matrix.png",
            "data_report.csv", "summary.md"} <= files
    importances = pd.read_csv(Path(info["out_dir"]) / "param_importances.csv")
    assert list(importances.columns) == ["param", "importance", "trials", "distribution", "note"]
    assert importances.loc[0, "note"]  # the method, or why there are no importances (2 smoke trials)
    tags = client.get_run(info["parent"]).data.tags
    assert all(tags.get(t) for t in ("git_commit", "data_fingerprint", "feature_hash"))


@pytest.mark.slow
def test_parent_run_holds_the_per_class_report(store: tuple[Path, dict[str, Any]]) -> None:
    import mlflow

    results, info = store
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    assert "per_class_report.csv" in {f.path for f in client.list_artifacts(info["parent"])}
    report = pd.read_csv(Path(info["out_dir"]) / "per_class_report.csv", index_col=0)
    assert {"precision", "recall", "f1-score", "support"} <= set(report.columns)
