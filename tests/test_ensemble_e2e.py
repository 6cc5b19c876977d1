"""A search whose final model is an ensemble: selection, refit, registration, and serving it unchanged.

Greedy selection is forced to a two-trial mix here, so that the path that registers an ensemble runs
every time; whether a mix wins on its own is tested on known probabilities in test_selection.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from genre_ray.config import load_config

SPACE = {
    "name": "ens", "task": "ens",
    "data": {"source": "demo", "demo": {"genres": 3, "songs_per_genre": 6, "seconds": 4.0}},
    "features": {"kind": {"choice": ["stats", "gtzan57"]}, "clip_seconds": 1.0, "clip_overlap": 0.0, "n_mels": 32,
                 "n_mfcc": 12},
    "model": {"name": {"choice": ["logreg", "knn"]},
              "params": {"logreg": {"C": {"loguniform": [0.01, 10.0]}}, "knn": {"n_neighbors": {"int": [1, 5]}}}},
    "split": {"folds": 3},
    "search": {"num_samples": 5, "max_concurrent": 1, "ensemble": 5},
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> dict[str, Any]:
    from genre_ray.search import selection
    from genre_ray.search.runner import run_search

    real = selection.greedy_ensemble

    def forced(candidates: list[np.ndarray], y: np.ndarray, rounds: int = 25) -> selection.EnsembleChoice:
        choice = real(candidates, y, rounds)
        other = next(i for i in range(len(candidates)) if i != choice.best)
        return selection.EnsembleChoice({choice.best: 0.75, other: 0.25}, choice.best, (1.0, 0.0), choice.best_score)

    results = tmp_path_factory.mktemp("ens")
    space = results / "ens.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "data": {**SPACE["data"], "path": str(results / "demo")}}))
    uri = f"sqlite:///{results / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setattr(selection, "greedy_ensemble", forced)
    try:
        [summary] = run_search(load_config(space, {"output.results_dir": str(results), "tracking.uri": uri}))
    finally:
        mp.undo()
    return {"summary": summary, "uri": uri, "results": results}


@pytest.mark.slow
def test_the_ensemble_is_refitted_registered_and_reported_beside_the_best_trial(searched: dict[str, Any]) -> None:
    s = searched["summary"]
    ens = s["ensemble"]
    assert ens["chosen"] and len(ens["members"]) == 2
    assert [m["weight"] for m in ens["members"]] == [0.75, 0.25]
    assert ens["members"][0]["trial_id"] == s["leaderboard"].loc[0, "trial_id"]  # the best trial leads
    assert s["test"]["acc"] == ens["test"]["acc"]  # the registered model is the one scored
    assert 0.0 <= s["single"]["test"]["acc"] <= 1.0 and s["single"]["val"] is not None
    assert s["scored_model"].startswith("an ensemble of 2 trials")
    client = mlflow.MlflowClient(searched["uri"])
    version = client.get_model_version_by_alias("genre-ens", "champion")
    assert version.tags["model"] == "ensemble" and version.tags["refit"] == "true"
    assert [m["trial_id"] for m in json.loads(version.tags["members"])] == [m["trial_id"] for m in ens["members"]]
    exp = client.get_experiment_by_name("ens")
    refits = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("genre_ray.kind") == "refit"]
    assert sorted(r.data.params["refit.of_trial"] for r in refits) == sorted(m["trial_id"] for m in ens["members"])
    parent = next(r for r in client.search_runs([exp.experiment_id]) if "ensemble_test_song_acc" in r.data.metrics)
    assert parent.data.metrics["best_single_test_song_acc"] == pytest.approx(s["single"]["test"]["acc"])
    summary_md = (Path(s["out_dir"]) / "summary.md").read_text()
    assert "Ensemble (greedy selection over the" in summary_md and "chosen and registered" in summary_md


@pytest.mark.slow
def test_predict_and_the_pyfunc_serve_the_registered_ensemble(searched: dict[str, Any], capsys: Any) -> None:
    from genre_ray import serving
    from genre_ray.serving.classifier import EnsembleClassifier
    from genre_ray.serving.predict import main as predict

    s = searched["summary"]
    songs = sorted((searched["results"] / "demo").rglob("*.wav"))[:4]
    clf = serving.load("models:/genre-ens@champion", searched["uri"])
    assert isinstance(clf, EnsembleClassifier) and len(clf.members) == 2
    assert {m.kind for m in clf.members} <= {"stats", "gtzan57"}
    pyfunc = mlflow.pyfunc.load_model("models:/genre-ens@champion")
    frame = pyfunc.predict(pd.DataFrame({"path": [str(p) for p in songs]}))
    assert frame["genre"].isin(s["classes"]).all()
    probs = frame[[f"prob_{c}" for c in s["classes"]]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    direct = clf.predict_file(songs[0])[0]  # the mix of the members' own song probabilities
    mixed = sum(w * m.predict_file(songs[0])[0] for m, w in zip(clf.members, clf.weights, strict=True))
    np.testing.assert_allclose(direct, mixed)
    np.testing.assert_allclose(probs[0], direct, atol=1e-9)
    assert predict(["models:/genre-ens@champion", str(songs[0]), "--json", "--tracking-uri", searched["uri"]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["results"][0]["genre"] == s["classes"][int(np.argmax(direct))]


@pytest.mark.slow
def test_suspect_labels_are_written_for_every_out_of_fold_song(searched: dict[str, Any]) -> None:
    s = searched["summary"]
    table = pd.read_csv(Path(s["out_dir"]) / "suspect_labels.csv")
    assert list(table.columns)[:5] == ["song_id", "label", "predicted", "probability", "label_probability"]
    assert (table["label"] != table["predicted"]).all() and (table["probability"] >= 0.5).all()
    splits = pd.read_csv(Path(s["out_dir"]) / "splits.csv")
    assert s["suspects"]["songs"] == int((splits["split"] != "test").sum())  # with folds: every non-test song


@pytest.mark.slow
def test_tag_serves_the_registered_ensemble(searched: dict[str, Any], tmp_path: Path) -> None:
    from genre_ray import serving
    from genre_ray.serving.tag import run_tag

    library = tmp_path / "library"
    library.mkdir()
    songs = sorted((searched["results"] / "demo").rglob("*.wav"))[:3]
    for i, song in enumerate(songs):
        (library / f"t{i}.wav").write_bytes(song.read_bytes())
    table, _ = run_tag(library, "models:/genre-ens@champion", tmp_path / "p.csv", tracking_uri=searched["uri"],
                         workers=1)
    clf = serving.load("models:/genre-ens@champion", searched["uri"])
    by_path = table.set_index("path")
    for i, song in enumerate(songs):
        expected = clf.predict_file(song)[0]
        row = by_path.loc[str(library / f"t{i}.wav")]
        assert row["genre"] == clf.classes[int(np.argmax(expected))]
        np.testing.assert_allclose(row[[f"prob_{c}" for c in clf.classes]].to_numpy(float), expected, atol=1e-9)
