"""Multi-node on one machine: ``ray.cluster_utils.Cluster`` with a head and 2 worker nodes.

Trials spread over the workers; a worker killed mid-search loses its trials, which Tune retries from
their last checkpoint (FailureConfig); the search ends with every trial accounted for, and the
feature cache made before the search is read, not recomputed. The scenario runs in its own process
(tests/_cluster_scenario.py) so that its cluster never meets the test session's local Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([sys.executable, str(HERE / "_cluster_scenario.py"), str(work)], capture_output=True,
                         text=True, timeout=900, env=env, cwd=work)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("SCENARIO ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-5000:]
    return {**json.loads(lines[-1][len("SCENARIO "):]), "work": work, "log": out.stderr}


@pytest.mark.slow
def test_trials_spread_over_both_worker_nodes(scenario: dict) -> None:
    assert len(scenario["nodes"]) >= 2, scenario["nodes"]


@pytest.mark.slow
def test_a_lost_node_s_trials_resume_from_their_checkpoint_and_all_complete(scenario: dict) -> None:
    assert scenario["killed"].get("trial"), "the worker was killed with no trial caught running on it"
    assert scenario["trials"] == 4
    assert scenario["stopped"] == ["completed"] * 4
    assert scenario["epochs"] == [scenario["planned_epochs"]] * 4
    # At least one trial was cut off on the killed node and carried on from a saved epoch, not from 0.
    assert scenario["restored_from_epochs"], scenario["log"][-3000:]
    assert "retrying it from its last checkpoint" in scenario["log"]
    assert scenario["checkpoints"] <= 2 * 4  # best and last per trial, no more


@pytest.mark.slow
def test_the_feature_cache_is_read_not_recomputed(scenario: dict) -> None:
    assert scenario["featurized"]["computed"] == ["logmel"]  # made once, before the search
    assert scenario["cache"]["hit"] is True


@pytest.mark.slow
def test_mlflow_has_one_parent_and_one_child_per_trial(scenario: dict) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{scenario['work'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("nodes")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("genre_ray.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("genre_ray.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    assert len({c.data.tags["genre_ray.trial_id"] for c in children}) == 4
