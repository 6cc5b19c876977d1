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

SMALL_SEARCH = {"num_samples": 2, "max_concurrent": 1, "grace_period": 1, "max_epochs": 2}


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


def _search(tmp_path: Path, doc: dict) -> dict:
    """Run a one-task search of ``doc`` with results and MLflow under ``tmp_path``."""
    from genre_ray.search.runner import run_search

    cfg = load_config(_space(tmp_path, doc), {"output.results_dir": str(tmp_path / "results"),
                                              "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                              "split.folds": doc.get("split", {}).get("folds")})
    [summary] = run_search(cfg)
    return summary


def test_model_must_fit_the_features(tmp_path: Path) -> None:
    table = _table(tmp_path / "features.csv")
    with pytest.raises(ConfigError, match="model.name: does not take table features .*mlp"):
        load_config(_space(tmp_path, {"data": {"source": "table", "path": str(table)}}))


@pytest.mark.slow
def test_search_on_a_feature_table(tmp_path: Path, ray_session: object) -> None:
    table = _table(tmp_path / "features.csv")
    summary = _search(tmp_path, {"task": "table", "data": {"source": "table", "path": str(table)},
                              "model": {"name": "mlp", "params": {"hidden": {"choice": [16, 32]}}},
                              "train": {"lr": 0.01, "epochs": 15},
                              "search": {**SMALL_SEARCH, "max_epochs": 15, "grace_period": 15}})
    splits = pd.read_csv(Path(summary["out_dir"]) / "splits.csv")
    assert splits["song_id"].is_unique and len(splits) == 18  # songs, not segments, are split
    assert summary["test_songs"] == 3 and summary["test_clips"] == 9
    assert summary["test"]["acc"] >= 2 / 3  # the classes are well apart
    report = pd.read_csv(Path(summary["out_dir"]) / "data_report.csv")
    assert list(report["reason"]) == ["nan_features"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "gtzan_features_30_sec_dev.csv").exists(), reason="../shared/data absent")
def test_search_on_the_real_gtzan_feature_table(tmp_path: Path, ray_session: object) -> None:

    summary = _search(tmp_path, {"task": "gtzan-table", "model": {"name": "mlp"}, "search": SMALL_SEARCH,
                              "data": {"source": "table",
                                       "path": str(SHARED_DATA / "gtzan_features_30_sec_dev.csv")}})
    assert len(summary["classes"]) == 10 and summary["test_songs"] == 10


def _images(root: Path, per_class: int = 6) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, label in enumerate(["Classical", "Rock", "Pop"]):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            stripes = np.zeros((40, 50), np.uint8)
            stripes[:, c * 15: c * 15 + 10] = 200  # each class lights a different band
            noise = rng.integers(0, 40, size=stripes.shape).astype(np.uint8)
            Image.fromarray(stripes + noise).convert("RGB").save(root / label / f"{label} {i}.png")
    (root / "Rock" / "broken.jpg").write_bytes(b"not an image")
    return root


@pytest.mark.slow
def test_search_on_a_spectrogram_image_folder(tmp_path: Path, ray_session: object) -> None:
    root = _images(tmp_path / "images")
    summary = _search(tmp_path, {"task": "images", "data": {"source": "images", "path": str(root)},
                              "features": {"image_size": 32},
                              "model": {"name": "cnn2d", "params": {"depth": 2, "width": 4}},
                              "train": {"lr": 0.01, "epochs": 4},
                              "search": {**SMALL_SEARCH, "max_epochs": 4, "grace_period": 4}})
    assert summary["classes"] == ["Classical", "Pop", "Rock"] and summary["test_songs"] == 3
    report = pd.read_csv(Path(summary["out_dir"]) / "data_report.csv")
    assert list(report["reason"]) == ["undecodable"] and report["path"][0].endswith("broken.jpg")


def test_images_decode_the_same_in_this_process_and_with_ray_data(tmp_path: Path, ray_session: object) -> None:
    """A small folder is decoded in the calling process (no Ray Data); a big one with Ray Data."""
    from genre_ray.data.tables import image_manifest
    from genre_ray.features.pipeline import content_hashes, featurize_images

    manifest, _ = image_manifest(_images(tmp_path / "images"))
    manifest = manifest.assign(sha=content_hashes(manifest["path"].tolist()))
    here, ray_data = featurize_images(manifest, 24), featurize_images(manifest, 24, in_process=False)
    assert here.info["in_process"] and not ray_data.info["in_process"]
    assert here.features["image"].shape == (len(manifest) - 1, 24, 24) and here.features["image"].max() > 0.5
    assert np.array_equal(here.features["image"], ray_data.features["image"])
    assert here.info["cache_key"] == ray_data.info["cache_key"]
    pd.testing.assert_frame_equal(here.clips, ray_data.clips, check_dtype=False)  # Ray's strings are Arrow's
    pd.testing.assert_frame_equal(here.skipped, ray_data.skipped, check_dtype=False)
    assert len(here.skipped) == 1 and here.skipped["path"].iloc[0].endswith("broken.jpg")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "spectrogram_images_dev").exists(), reason="../shared/data absent")
def test_real_spectrogram_images_load(ray_session: object) -> None:
    from genre_ray.data.tables import image_manifest
    from genre_ray.features.pipeline import content_hashes, featurize_images

    manifest, _ = image_manifest(SHARED_DATA / "spectrogram_images_dev")
    manifest = manifest.assign(sha=content_hashes(manifest["path"].tolist()))
    table = featurize_images(manifest, 64)
    assert table.features["image"].shape == (14, 64, 64) and table.skipped.empty
    assert 0.0 <= table.features["image"].min() and table.features["image"].max() <= 1.0


@pytest.mark.slow
def test_csv_manifest_with_artists_gives_an_artist_split(tiny_demo: Path, tmp_path: Path,
                                                         ray_session: object) -> None:
    files = sorted(tiny_demo.rglob("*.wav"))
    rows = [{"path": str(p.relative_to(tiny_demo)), "label": p.parent.name, "artist": f"{p.parent.name}-{i // 2}"}
            for i, p in enumerate(files)]
    csv = tiny_demo / "manifest.csv"  # relative paths resolve against the CSV's folder
    pd.DataFrame(rows).to_csv(csv, index=False)
    summary = _search(tmp_path, {"task": "csv", "data": {"source": "csv", "path": str(csv)},
                              "features": {"clip_seconds": 1.0, "n_mels": 32},
                              "model": {"name": "cnn2d", "params": {"depth": 1, "width": 4}},
                              "split": {"val_fraction": 0.2, "test_fraction": 0.2},
                              "search": {**SMALL_SEARCH, "num_samples": 1, "max_epochs": 1}})
    assert summary["split_method"] == "by artist"
    splits = pd.read_csv(Path(summary["out_dir"]) / "splits.csv")
    assert (splits.groupby("artist")["split"].nunique() == 1).all()
    assert set(splits["split"]) == {"train", "val", "test"}


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mp3_dev").exists(), reason="../shared/data absent")
def test_real_stereo_mp3s_featurize(tmp_path: Path, ray_session: object) -> None:
    from genre_ray.data.manifests import csv_manifest
    from genre_ray.features import FeatureSettings
    from genre_ray.features.pipeline import featurize

    mp3s = sorted((SHARED_DATA / "mp3_dev").glob("*.mp3"))
    csv = tmp_path / "mp3.csv"
    pd.DataFrame({"path": [str(p) for p in mp3s], "label": [p.stem for p in mp3s]}).to_csv(csv, index=False)
    manifest, skipped = csv_manifest(csv)
    assert skipped.empty and len(manifest) == 6
    table = featurize(manifest, FeatureSettings(), tmp_path / "cache")
    assert table.skipped.empty and table.clips["sha"].nunique() == 6
    assert np.isfinite(table.features["logmel"]).all()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "gtzan_dev").exists(), reason="../shared/data absent")
def test_search_on_real_gtzan_clips_in_folders(tmp_path: Path, ray_session: object) -> None:
    summary = _search(tmp_path, {"task": "gtzan-dev",
                                 "data": {"source": "folder", "path": str(SHARED_DATA / "gtzan_dev")},
                                 "features": {"n_mels": 32, "clip_overlap": 0.0},
                                 "model": {"name": "cnn2d", "params": {"depth": 2, "width": 4}},
                                 "search": {**SMALL_SEARCH, "num_samples": 1, "max_epochs": 1}})
    assert len(summary["classes"]) == 10 and summary["test_songs"] == 10
    assert summary["cache"]["files"] == 30 and summary["cache"]["clips"] == 300


@pytest.mark.slow
def test_k_fold_cross_validation_reports_the_mean_over_folds(tiny_demo: Path, tmp_path: Path,
                                                             ray_session: object) -> None:
    summary = _search(tmp_path, {"task": "cv", "data": {"source": "folder", "path": str(tiny_demo)},
                                 "features": {"clip_seconds": 1.0, "n_mels": 32},
                                 "model": {"name": "cnn2d", "params": {"depth": 1, "width": 4}},
                                 "split": {"folds": 3},
                                 "search": {**SMALL_SEARCH, "num_samples": 1, "max_epochs": 2}})
    splits = pd.read_csv(Path(summary["out_dir"]) / "splits.csv")
    dev = splits[splits["split"] != "test"]
    assert sorted(dev["fold"].unique()) == [0, 1, 2] and (splits.loc[splits["split"] == "test", "fold"] == -1).all()
    board = pd.read_csv(Path(summary["out_dir"]) / "leaderboard.csv")
    assert "cross-validation" in summary["split_method"]
    assert summary["registered"]["alias"] == "champion"  # the fold ensemble is registered
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    wave = np.sin(np.arange(2 * 22050) / 22050 * 2 * np.pi * 220).tolist()  # the fold ensemble takes audio
    out = mlflow.pyfunc.load_model("models:/genre-cv@champion").predict(
        pd.DataFrame({"waveform": [wave, wave], "sample_rate": [22050, 22050]}))
    probs = out.filter(like="prob_").to_numpy()
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert len(board) == 1


def test_data_table_turns_the_zoo_into_its_table_models(tmp_path: Path) -> None:
    """``--data features.csv`` on zoo.yaml: the table's columns, and only the models that take rows."""
    from genre_ray.search import _overrides, build_parser

    table = _table(tmp_path / "features.csv")
    zoo = Path(__file__).resolve().parents[1] / "search_spaces" / "zoo.yaml"
    cfg = load_config(zoo, _overrides(build_parser().parse_args([str(zoo), "--data", str(table)])))
    assert cfg.data["source"] == "table" and cfg.feature_kinds == ["table"] and cfg.task == "features"
    assert cfg.model_names == ["mlp", "svm", "random_forest", "logreg"]
    assert "cnn2d" in cfg.model["left_out"] and set(cfg.model["by_model"]) == set(cfg.model_names)
