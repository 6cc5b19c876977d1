"""The search seen through a real MLflow server's REST API, and a tracking server that does not answer.

The slow tests start ``mlflow server`` on 127.0.0.1 and a free port (see ``_mlflow_server.py``),
check through the REST API what a smoke search left in the store, then stop the server's whole
process group and check that none of it is left.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _mlflow_server import ROOT, SPACE, MlflowServer, free_port, searched_store, smoke_config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> tuple[Path, dict[str, Any]]:
    return searched_store(tmp_path_factory.getbasetemp())


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _runs(server: MlflowServer, experiment: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The experiment's one parent run and its trials' child runs, through the REST API (the
    parent's one other child, the winner's refit, is checked apart)."""
    exp = server.get("experiments/get-by-name", experiment_name=experiment)["experiment"]
    runs = server.post("runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
    [parent] = [r for r in runs if _tags(r).get("genre_ray.kind") == "search"]
    children = [r for r in runs if _tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    refits = [r for r in children if _tags(r).get("genre_ray.kind") == "refit"]
    assert len(refits) == 1 and refits[0]["info"]["status"] == "FINISHED"
    return parent, [r for r in children if _tags(r).get("genre_ray.kind") == "trial"]


def _champion(server: MlflowServer, name: str) -> dict[str, Any]:
    """The registered model's champion version; its alias must also be on the model itself."""
    model = server.get("registered-models/get", name=name)["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert "champion" in aliases, model
    version = dict(server.get("registered-models/alias", name=name, alias="champion")["model_version"])
    assert version["version"] == aliases["champion"]
    return version


# Runs the command line in a fresh interpreter and reports whether Ray was started, and how long the
# search took to fail (the interpreter's own start-up, imports included, is not counted).
_PROBE = """
import json, sys, time
from genre_ray.search import main
t = time.perf_counter()
rc = main(sys.argv[1:])
ray = sys.modules.get("ray")
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
                  "ray_started": bool(ray is not None and ray.is_initialized())}))
"""


def test_unreachable_tracking_server_fails_fast_before_ray(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    args = [str(SPACE), "--smoke", "--results-dir", str(tmp_path), "--tracking-uri", uri, "-q"]
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 1, proc.stderr
    assert f"error: tracking.uri {uri}: the MLflow server does not answer" in proc.stderr
    # Before Ray and before any audio: what makes it fast. The bound is loose on purpose (imports
    # alone take seconds on a loaded 2-core machine); timing is not what this test checks.
    assert out["seconds"] < 30
    assert not out["ray_started"]
    assert not (tmp_path / "demo_collection").exists()  # no data read, nothing featurized


@pytest.mark.slow
def test_rest_api_shows_experiment_runs_and_champion(store: tuple[Path, dict[str, Any]],
                                                     tmp_path: Path) -> None:
    results, info = store
    server = MlflowServer(f"sqlite:///{results / 'mlflow.db'}", tmp_path / "server")
    with server:
        parent, children = _runs(server, info["experiment"])
        assert parent["info"]["run_id"] == info["parent"] and parent["info"]["status"] == "FINISHED"
        for tag in ("git_commit", "data_fingerprint", "feature_hash"):
            assert _tags(parent)[tag]
        assert len(children) == 2
        curves = [server.get("metrics/get-history", run_id=c["info"]["run_id"], metric_key="val_song_acc")
                  for c in children]
        steps = [sorted(m["step"] for m in curve.get("metrics", [])) for curve in curves]
        assert [1, 2] in steps, steps  # per-epoch step metrics: a learning curve
        files = {f["path"] for f in server.get("artifacts/list", run_id=info["parent"]).get("files", [])}
        assert {"leaderboard.csv", "param_importances.csv", "best_so_far.png", "confusion_matrix.png",
                "data_report.csv"} <= files
        champion = _champion(server, info["model"])
        assert champion["run_id"] == info["parent"]
    assert server.left_over == [], f"server processes left running: {server.left_over}"
    with pytest.raises(OSError):  # nothing answers on its port any more
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


@pytest.mark.slow
def test_search_tracks_to_a_remote_server(store: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    import mlflow

    from genre_ray.search.runner import run_search

    results, _ = store  # its demo collection and feature cache are reused
    before = mlflow.get_tracking_uri()
    server = MlflowServer(f"sqlite:///{tmp_path / 'remote.db'}", tmp_path / "server")
    try:
        with server:
            t0 = time.perf_counter()
            [summary] = run_search(smoke_config(results, server.url, name="cnn-remote"))
            assert time.perf_counter() - t0 < 45
            assert summary["tracking_uri"] == server.url
            parent, children = _runs(server, summary["task"])
            assert parent["info"]["run_id"] == summary["tracker"].parent_id and len(children) == 2
            listed = server.get("artifacts/list", run_id=parent["info"]["run_id"])
            assert "leaderboard.csv" in {f["path"] for f in listed["files"]}  # through the artifact proxy
            reg = summary["registered"]
            assert reg["alias"] == "champion" and _champion(server, reg["name"])["version"] == reg["version"]
    finally:
        mlflow.set_tracking_uri(before)  # the Tracker set it to this server, which is gone now
    assert server.left_over == []
