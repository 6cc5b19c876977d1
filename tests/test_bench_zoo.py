"""``python -m genre_ray.bench zoo``: the zoo and a tuned SVM on the same songs, one report."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


@pytest.mark.slow
def test_zoo_and_svm_are_compared_on_the_same_test_songs(tmp_path: Path, ray_session: object) -> None:
    import argparse

    from genre_ray.bench import zoo

    parser = argparse.ArgumentParser()
    zoo.add_arguments(parser)
    out = tmp_path / "zoo.md"
    assert zoo.run_cli(parser.parse_args(["--smoke", "--results-dir", str(tmp_path), "--out", str(out)])) == 0
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["search"] for r in rows] == ["svm", "sklearn_gridsearch", "zoo", "zoo_scratch", "embeddings"]
    assert rows[0]["best_model"] == "svm" and rows[0]["features"] == "gtzan57"
    assert rows[0]["split_id"] == rows[1]["split_id"] and rows[0]["test_songs"] == rows[1]["test_songs"] == "3"
    assert rows[1]["best_model"] == "svm (GridSearchCV)" and rows[1]["test_songs"] == rows[0]["test_songs"]
    assert "refit on 12 songs" in rows[1]["note"]  # scikit-learn's own search, refitted on every non-test song
    assert rows[3]["features"] not in ("musicnn_msd", "vgg_msd")  # the zoo without pretrained kinds
    assert rows[4]["features"] in ("musicnn_msd", "musicnn_mtt", "vgg_msd")
    assert len({r["split_id"] for r in rows}) == 1
    text = out.read_text()
    assert "beat" in text and "the same 3 test songs" in text
    assert "the best embedding model" in text and "the from-scratch zoo" in text and "(the stronger SVM)" in text
    assert (tmp_path / "bench_zoo_runs" / "mlflow.db").exists()  # its own store, not the user's
