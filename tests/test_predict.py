"""``python -m genre_ray.predict``: from a registered champion, a run's model and a local copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf

from genre_ray.config import SMOKE_OVERRIDES, load_config
from genre_ray.serving.predict import find_audio, main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m genre_ray.predict`` in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "genre_ray.predict", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The same command line through :func:`main` in this process: what a process of its own adds is
    its start-up, about 10 CPU-seconds, which the first test here already covers."""
    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["genre_ray.predict", *args], rc, out.out, out.err)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, tiny_demo: Path, ray_session: object) -> dict:
    """A smoke search on the tiny demo collection, registered as genre-demo."""
    from genre_ray.search.runner import run_search

    results = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{results / 'mlflow.db'}"
    overrides = {**SMOKE_OVERRIDES, "data.source": "folder", "data.path": str(tiny_demo), "task": "demo",
                 "output.results_dir": str(results), "tracking.uri": uri}
    [summary] = run_search(load_config(ROOT / "search_spaces" / "cnn.yaml", overrides))
    assert summary["registered"]["alias"] == "champion"
    # a 10-second song: more clips than max_clips_per_song (3), for the timeline
    first = sorted(tiny_demo.rglob("*.wav"))[:3]
    rate = sf.info(str(first[0])).samplerate
    wave = np.concatenate([sf.read(p, dtype="float32")[0] for p in first])
    long_song = results / "long song.wav"
    sf.write(long_song, wave[: 10 * rate], rate)
    return {"results": results, "uri": uri, "summary": summary, "cfg_overrides": overrides, "long": long_song,
            "classes": summary["classes"]}


def _check_results(doc: dict, files: list[Path], classes: list[str]) -> None:
    assert doc["classes"] == classes
    assert [r["path"] for r in doc["results"]] == [str(f) for f in files]
    for r in doc["results"]:
        assert "error" not in r, r
        probs = r["probabilities"]
        assert list(probs) == classes and abs(sum(probs.values()) - 1.0) < 1e-5
        assert r["genre"] in classes and r["genre"] == max(probs, key=probs.get)
        assert [t["genre"] for t in r["top"]][0] == r["genre"] and len(r["top"]) == 3


@pytest.mark.slow
def test_json_from_the_champion_for_files_and_a_folder(registered: dict, tiny_demo: Path) -> None:
    genre_dir = sorted(p for p in tiny_demo.iterdir() if p.is_dir())[0]
    one = sorted(tiny_demo.rglob("*.wav"))[-1]
    run = _cli("models:/genre-demo@champion", str(one), str(genre_dir), "--json",
               "--tracking-uri", registered["uri"])
    assert run.returncode == 0, run.stderr
    files = [one, *sorted(genre_dir.rglob("*.wav"))]
    doc = json.loads(run.stdout)
    _check_results(doc, files, registered["classes"])
    assert doc["model_info"]["split_id"] == registered["summary"]["split_id"]


@pytest.mark.slow
def test_timeline_text_and_json(registered: dict, capsys: pytest.CaptureFixture[str]) -> None:
    long_song = registered["long"]
    run = _main(capsys, "models:/genre-demo@champion", str(long_song), "--timeline", "--top-k", "2",
               "--tracking-uri", registered["uri"])
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith(f"{long_song}: ") and lines[0].count(",") == 1  # top 2
    assert [line.split()[0] for line in lines[1:]] == ["0:00.0-0:03.0", "0:03.0-0:06.0", "0:06.0-0:09.0"]
    run = _main(capsys, "models:/genre-demo@champion", str(long_song), "--timeline", "--json",
               "--tracking-uri", registered["uri"])
    [entry] = json.loads(run.stdout)["results"]
    assert [c["start_s"] for c in entry["clips"]] == [0.0, 3.0, 6.0]
    for clip in entry["clips"]:
        assert abs(sum(clip["probabilities"].values()) - 1.0) < 1e-5
        assert clip["genre"] in registered["classes"]


@pytest.mark.slow
def test_a_runs_uri_and_a_local_copy_give_the_same_answer(registered: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    client = mlflow.MlflowClient(registered["uri"])
    version = client.get_model_version_by_alias("genre-demo", "champion")
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/genre-demo@champion",
                                                dst_path=str(tmp_path), tracking_uri=registered["uri"])
    song = registered["long"]
    answers = []
    runs_uri = f"runs:/{version.run_id}/model"
    for model, extra in ((runs_uri, ["--tracking-uri", registered["uri"]]), (local, [])):
        run = _main(capsys, model, str(song), "--json", *extra)
        assert run.returncode == 0, run.stderr
        doc = json.loads(run.stdout)
        _check_results(doc, [song], registered["classes"])
        answers.append(doc["results"][0]["probabilities"])
    assert answers[0] == pytest.approx(answers[1], abs=1e-6)


@pytest.mark.slow
def test_the_registered_version_carries_what_it_was_trained_on(registered: dict) -> None:
    client = mlflow.MlflowClient(registered["uri"])
    tags = client.get_model_version_by_alias("genre-demo", "champion").tags
    assert tags["split_id"] == registered["summary"]["split_id"]
    assert tags["kind"] == "logmel" and tags["classes"] == ",".join(registered["classes"])
    assert json.loads(tags["feature_settings"])["max_clips_per_song"] == 3
    assert len(tags["feature_cache_key"]) == 24 and tags["decision"] == "first model for this task"


@pytest.mark.slow
def test_a_second_search_on_the_same_split_applies_the_champion_policy(registered: dict) -> None:
    from genre_ray.search.runner import run_search

    overrides = {**registered["cfg_overrides"], "name": "again", "train.lr": 1e-7}  # learns nothing
    [second] = run_search(load_config(ROOT / "search_spaces" / "cnn.yaml", overrides))
    first_score, second_score = registered["summary"]["test"]["acc"], second["test"]["acc"]
    assert second["split_id"] == registered["summary"]["split_id"]
    client = mlflow.MlflowClient(registered["uri"])
    new = client.get_model_version("genre-demo", second["registered"]["version"]).tags
    assert float(new["test_song_acc"]) == pytest.approx(second_score, abs=1e-6)
    assert float(new["compared_with_test_song_acc"]) == pytest.approx(first_score, abs=1e-6)
    champion = client.get_model_version_by_alias("genre-demo", "champion")
    if second_score > first_score:
        assert second["registered"]["alias"] == "champion"
        assert str(champion.version) == second["registered"]["version"]
    else:
        assert second["registered"]["alias"] == "challenger" and "does not beat" in new["decision"]
        assert str(champion.version) == registered["summary"]["registered"]["version"]


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    song = tmp_path / "a.wav"
    sf.write(song, np.zeros(8000, np.float32) + 0.1, 8000)
    assert main(["models:/genre-x@champion", str(tmp_path / "missing.mp3")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.mp3'}: no such file or folder"
    assert main(["models:/genre-x@champion", str(song), "--results-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "there is no MLflow store" in err[0]
    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # an empty store
    assert main(["models:/genre-x@champion", str(song), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: models:/genre-x@champion: cannot load the model in sqlite")
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path), str(tmp_path / "empty")]) == 2
    assert "no audio files in this folder" in capsys.readouterr().err


def test_folders_are_walked_for_audio_files(tmp_path: Path) -> None:
    for name in ("b/song.MP3", "a/x.wav", "a/notes.txt", ".hidden/y.wav", "c.flac"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    files, problems = find_audio([str(tmp_path)])
    assert problems == [] and [f.relative_to(tmp_path).as_posix() for f in files] == ["a/x.wav", "b/song.MP3",
                                                                                        "c.flac"]
