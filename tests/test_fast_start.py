"""Issue 16's fast start: a search on one machine featurizes before it pays for Ray, Tune and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from _procs import child_env

from genre_ray.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_runner_and_the_tracking_check_import_neither_ray_nor_mlflow() -> None:
    code = ("import sys, genre_ray.search.runner, genre_ray.tracking as t; t.check_reachable('sqlite:///x.db'); "
            "t.default_tracking_uri('.'); import json; "
            "print(json.dumps([m for m in ('ray', 'ray.tune', 'mlflow', 'optuna', 'sklearn') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=child_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(("overrides", "env", "first"), [
    ({}, {}, False),  # one machine, a CPU trial: features first, then Ray
    ({"resources.gpu": 1}, {}, True),  # no local Ray could serve it: fail before reading audio
    ({"resources.cpu": 1024}, {}, True),  # more CPUs than this machine has
    ({}, {"RAY_ADDRESS": "10.0.0.1:6379"}, True),  # a cluster: join it and check it first
])
def test_ray_starts_first_only_when_the_check_could_fail(overrides: dict, env: dict, first: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from genre_ray.search.runner import _ray_before_featurizing

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False))
    cfg = load_config(ROOT / "search_spaces" / "cnn.yaml", overrides)
    assert _ray_before_featurizing(cfg) is first
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: True))
    assert _ray_before_featurizing(cfg) is True  # a process whose Ray runs already: use it as it is
