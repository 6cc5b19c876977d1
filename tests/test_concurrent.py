"""Two searches started at the same moment in one results folder both finish, and the store stays whole.

Before the cross-process locks, the second of two `--smoke` searches started 0.2 s apart in a fresh
folder died in MLflow's SQLite migration (``table _alembic_tmp_experiments already exists``), and
both generated the demo collection into the same place.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from _procs import child_env

ROOT = Path(__file__).resolve().parents[1]


def _two_at_once(results: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "genre_ray.search", str(ROOT / "search_spaces" / "cnn.yaml"), "--smoke",
           "--results-dir", str(results), "-q"]
    procs = []
    for name in ("first", "second"):
        procs.append(subprocess.Popen([*cmd, "--name", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, cwd=ROOT, env=env))
        time.sleep(0.2)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out) for p, out in zip(procs, outs, strict=True)]


def _check_store(results: Path, parents: int) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    searches = [r for r in runs if r.data.tags.get("genre_ray.kind") == "search"]
    assert len(searches) == parents and all(r.info.status == "FINISHED" for r in searches)
    for parent in searches:  # every parent kept its trials' child runs
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) >= 2, parent.info.run_name
    versions = client.search_model_versions("name='genre-demo'")
    assert len(versions) == parents
    champion = client.get_model_version_by_alias("genre-demo", "champion")
    same_split = [v for v in versions if v.tags.get("split_id") == champion.tags["split_id"]]
    # the policy held whichever search registered last: no version on the champion's split scores higher
    assert float(champion.tags["test_song_acc"]) == max(float(v.tags["test_song_acc"]) for v in same_split)


@pytest.mark.slow
def test_two_searches_at_once_in_a_fresh_folder_and_then_on_its_existing_store(tmp_path: Path,
                                                                             joined_env: dict[str, str]) -> None:
    """First as on a laptop (each search starts its own local Ray), then as on a cluster (both drivers
    join one Ray, here the test worker's)."""
    results = tmp_path / "results"
    # a fresh folder, then the store the first round left
    for round_, parents, env in ((1, 2, child_env()), (2, 4, joined_env)):
        done = _two_at_once(results, env)
        for p in done:
            assert p.returncode == 0, f"round {round_}:\n{p.stdout[-3000:]}"
            # The driver's own output: a Ray worker's lines come tagged "(train_trial pid=...)", and a
            # worker stopped at shutdown may print Ray's SIGTERM handler's SystemExit there.
            driver = [ln for ln in p.stdout.splitlines() if not re.match(r"(\x1b\[\d+m)?\(\w+ pid=", ln)]
            at = [i for i, ln in enumerate(driver) if "Traceback" in ln]
            assert not at, "\n".join(driver[at[0]:at[0] + 40]) if at else ""  # the traceback itself, not the report
        _check_store(results, parents)
    demo = results / "demo_collection"
    assert (demo / ".demo-complete.json").is_file()
    assert not list(results.glob(".demo_collection-*"))  # no half-written collection left beside it
