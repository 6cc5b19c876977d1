"""The registered model over HTTP: ``mlflow models serve -m models:/genre-<task>@champion``, as the README
shows it, answers real requests with audio file paths and with waveforms.

A tiny network trained on generated tones (low vs high pitch, :mod:`test_serving`) is registered as
a search registers its winner (:class:`genre_ray.tracking.Tracker`), into the test's own SQLite
store. The server runs with ``--env-manager local`` (nothing is installed or downloaded) in its own
process group, which is stopped as a whole; the test checks that none of it is left, and that the
port is closed again.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import soundfile as sf
from _mlflow_server import MlflowServer
from _procs import child_env
from test_serving import CLASSES, _trained, tone

TASK = "http"
URI = f"models:/genre-{TASK}@champion"


@contextmanager
def model_server(model_uri: str, store_uri: str, workdir: Path) -> Iterator[MlflowServer]:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1 and a free port, in its own process group,
    waited for and stopped as the tracking server of :mod:`_mlflow_server` is (its ``/health``, then
    the whole group; :meth:`MlflowServer.stop` leaves the survivors in ``left_over``)."""
    server = MlflowServer(store_uri, workdir, timeout=180.0)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(server.port), "--workers", "1"]
    env = child_env(MLFLOW_TRACKING_URI=store_uri, CUDA_VISIBLE_DEVICES="")  # uvicorn found beside this Python
    server.log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed by stop()
    server.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=server.log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server._wait_healthy()
        yield server
    finally:
        server.stop()


def invoke(server: MlflowServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST ``body`` to the model server's /invocations as JSON; the rows of its ``predictions``."""
    req = urllib.request.Request(f"{server.url}/invocations", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - localhost
            return list(json.loads(r.read())["predictions"])
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"/invocations answered {exc.code}: {exc.read()[:2000]!r}\n"
                             f"{server.tail()}") from None


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A SQLite store with ``genre-http`` registered, its version 1 the champion."""
    from genre_ray.serving import version_tags
    from genre_ray.tracking import Tracker

    base = tmp_path_factory.mktemp("http_serving")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    try:
        tracker = Tracker(uri, TASK, artifact_root=base / "mlartifacts")
        tracker.start_parent("http-serving", {}, {})
        classifier = _trained()
        reg = tracker.register_model(classifier, f"genre-{TASK}", 1.0, "split-1", version_tags(classifier))
        tracker.finish_parent({}, {}, [])
    finally:
        mlflow.set_tracking_uri(before)
    assert reg is not None and reg["model_uri"] == URI, reg
    yield uri, base


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("http_songs")
    sf.write(d / "low.wav", tone("low", 3.0, 22050, seed=201), 22050)
    sf.write(d / "high.flac", tone("high", 2.5, 44100, seed=202), 44100)
    return {"low": d / "low.wav", "high": d / "high.flac"}


def _check(rows: list[dict[str, Any]], expected: list[str]) -> None:
    assert [r["genre"] for r in rows] == expected, rows
    for r in rows:
        probs = [r[f"prob_{c}"] for c in CLASSES]
        assert r["error"] is None and r["genre"] in CLASSES
        assert sum(probs) == pytest.approx(1.0, abs=1e-6) and min(probs) >= 0
        assert r["confidence"] == pytest.approx(max(probs))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_mlflow_models_serve_answers_paths_and_waveforms(store: tuple[str, Path],
                                                          songs: dict[str, Path]) -> None:
    uri, base = store
    with model_server(URI, uri, base / "serve") as server:
        assert urllib.request.urlopen(f"{server.url}/ping", timeout=10).status == 200  # noqa: S310
        # Audio files by path, in the split orientation of a pandas DataFrame.
        by_path = invoke(server, {"dataframe_split": {"columns": ["path"],
                                                      "data": [[str(songs["low"])], [str(songs["high"])]]}})
        _check(by_path, ["low", "high"])
        assert [r["path"] for r in by_path] == [str(songs["low"]), str(songs["high"])]
        # Waveforms with their sample rate, in the records orientation: 8 kHz here, 16 kHz in training.
        waves = [{"waveform": np.round(tone(g, 2.0, 8000, seed=203 + i), 5).tolist(), "sample_rate": 8000}
                 for i, g in enumerate(["high", "low"])]
        _check(invoke(server, {"dataframe_records": waves}), ["high", "low"])
        # The pyfunc's one parameter: a row per clip of each song.
        timeline = invoke(server, {"dataframe_records": waves[:1], "params": {"timeline": True}})
        assert [(r["row"], r["clip"]) for r in timeline] == [(0, 0), (0, 1)], timeline  # 2 s in 1-s clips
        assert all(r["genre"] in CLASSES for r in timeline)
    assert server.proc is None and server.left_over == [], f"still running after the stop: {server.left_over}"
    assert not _listening(server.port)
