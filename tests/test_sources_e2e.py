"""Searches over non-audio sources: a feature table (GTZAN features CSV layout) and the real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SHARED_DATA

from genre_ray.config import ConfigError, load_config
from genre_ray.data.tables import song_of_filename, table_manifest

SMALL_SEARCH = {"num_samples": 2, "max_concurrent": 2, "grace_period": 1, "max_epochs": 2}


def _table(path: Path, songs_per_class: int = 6, segments: int = 3) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for c, label in enumerate(["blues", "jazz", "metal"]):
        for i in range(songs_per_class):
            for seg in range(segments):
                feats = rng.normal(loc=2.0 * c, scale=1.0, size=6)
                rows.append({"filename": f"{label}.{i:05d}.{seg}.wav", "length": 66149,
                             **{f"f{j}_mean": v for j, v in enumerate(feats)}, "label": label})
    rows[0]["f0_mean"] = np.nan  # one damaged row, reported and left out
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_segments_of_a_song_share_its_id() -> None:
    assert song_of_filename("blues.00012.3.wav") == "blues.00012"
    assert song_of_filename("blues.00012.wav") == "blues.00012"
    assert song_of_filename("track 7.mp3") == "track 7"


def test_table_rows_features_and_skips(tmp_path: Path) -> None:
    rows, values, names, skipped = table_manifest(_table(tmp_path / "features.csv"))
    assert values.shape == (53, 6) and names[0] == "f0_mean" and "length" not in names
    assert rows["song_id"].nunique() == 18 and len(skipped) == 1 and skipped["reason"][0] == "nan_features"


def _space(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_model_must_fit_the_features(tmp_path: Path) -> None:
    table = _table(tmp_path / "features.csv")
    with pytest.raises(ConfigError, match="model.name: does not take table features .*mlp"):
        load_config(_space(tmp_path, {"data": {"source": "table", "path": str(table)}}))


@pytest.mark.slow
def test_search_on_a_feature_table(tmp_path: Path, ray_session: object) -> None:
    from genre_ray.runner import run_search

    table = _table(tmp_path / "features.csv")
    space = _space(tmp_path, {"task": "table", "data": {"source": "table", "path": str(table)},
                              "model": {"name": "mlp", "params": {"hidden": {"choice": [16, 32]}}},
                              "train": {"lr": 0.01, "epochs": 15},
                              "search": {**SMALL_SEARCH, "max_epochs": 15, "grace_period": 15}})
    cfg = load_config(space, {"output.results_dir": str(tmp_path / "results"),
                              "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    [summary] = run_search(cfg)
    splits = pd.read_csv(Path(summary["out_dir"]) / "splits.csv")
    assert splits["song_id"].is_unique and len(splits) == 18  # songs, not segments, are split
    assert summary["test_songs"] == 3 and summary["test_clips"] == 9
    assert summary["test"]["acc"] >= 2 / 3  # the classes are well apart
    report = pd.read_csv(Path(summary["out_dir"]) / "data_report.csv")
    assert list(report["reason"]) == ["nan_features"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "gtzan_features_30_sec_dev.csv").exists(), reason="../shared/data absent")
def test_search_on_the_real_gtzan_feature_table(tmp_path: Path, ray_session: object) -> None:
    from genre_ray.runner import run_search

    space = _space(tmp_path, {"task": "gtzan-table", "model": {"name": "mlp"}, "search": SMALL_SEARCH,
                              "data": {"source": "table",
                                       "path": str(SHARED_DATA / "gtzan_features_30_sec_dev.csv")}})
    cfg = load_config(space, {"output.results_dir": str(tmp_path / "results"),
                              "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    [summary] = run_search(cfg)
    assert len(summary["classes"]) == 10 and summary["test_songs"] == 10
