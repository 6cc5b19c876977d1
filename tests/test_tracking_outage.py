"""A real MLflow server that goes away mid-search and comes back: nothing a trial did is lost.

The search goes on while the server is away and keeps what it could not log; `--resume` of the
finished search logs it once the server answers again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from _mlflow_server import ROOT, SPACE, MlflowServer
from _procs import child_env


def _runs(server: MlflowServer, experiment: str) -> list[dict]:
    try:
        exp = server.get("experiments/get-by-name", experiment_name=experiment)["experiment"]
    except OSError:
        return []
    found = server.post("runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})
    return found.get("runs", [])


@pytest.mark.slow
def test_a_search_survives_its_tracking_server_going_away_and_resume_logs_what_it_missed(
        tmp_path: Path, joined_env: dict[str, str]) -> None:
    """The search joins the test worker's Ray (the tracking calls are the driver's); the finished
    search's ``--resume`` starts no Ray at all."""
    results = tmp_path / "results"
    server = MlflowServer(f"sqlite:///{tmp_path / 'remote.db'}", tmp_path / "server")
    cmd = [sys.executable, "-m", "genre_ray.search", str(SPACE), "--smoke", "--results-dir", str(results),
           "--tracking-uri", server.url, "--set", "train.epochs=3", "--set", "search.max_epochs=3",
           "--set", "search.grace_period=3"]
    with server:
        search = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=joined_env)
        deadline = time.monotonic() + 300
        while not [r for r in _runs(server, "demo") if r["data"].get("tags")]:  # the parent run is there
            assert search.poll() is None and time.monotonic() < deadline, "the search ended before logging"
            time.sleep(0.2)
    assert server.left_over == []  # the server is gone while the trials run
    out, _ = search.communicate(timeout=600)
    assert search.returncode == 0, out[-3000:]
    assert "the server is away" in out
    backlog = results / "cnn" / "tracking_backlog" / "backlog.pkl"
    assert backlog.is_file()
    assert (results / "cnn" / "leaderboard.csv").is_file()  # every trial's result is in results/ anyway

    again = MlflowServer(server.store_uri, tmp_path / "server", port=server.port)  # it comes back
    with again:
        done = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=child_env())
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "MLflow calls its tracking server missed" in done.stdout + done.stderr
        runs = _runs(again, "demo")
        parents = [r for r in runs if r["data"].get("tags") and any(
            t["key"] == "genre_ray.kind" and t["value"] == "search" for t in r["data"]["tags"])]
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
        parent_id = parents[0]["info"]["run_id"]
        children = [r for r in runs if any(t["key"] == "mlflow.parentRunId" and t["value"] == parent_id
                                           for t in r["data"].get("tags", []))]
        assert len(children) >= 2 and all(c["info"]["status"] == "FINISHED" for c in children)
        champion = again.get("registered-models/alias", name="genre-demo", alias="champion")
        assert champion["model_version"]["run_id"] == parent_id  # the missed registration, made now
    assert not backlog.exists() and again.left_over == []
