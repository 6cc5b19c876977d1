"""A throwaway MLflow server on localhost for the REST and browser tests, and the search that fills it.

The server runs in its own process group (``mlflow server`` starts uvicorn, and more), so stopping
it means signalling the whole group and then checking that none of it is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "cnn.yaml"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again before it is returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smoke_config(results: Path, uri: str, **more: Any) -> Any:
    """``search_spaces/cnn.yaml`` in smoke mode, with 2 epochs a trial so that child runs have curves."""
    from genre_ray.config import SMOKE_OVERRIDES, load_config

    return load_config(SPACE, {**SMOKE_OVERRIDES, "train.epochs": 2, "search.max_epochs": 2,
                               "search.grace_period": 2, "output.results_dir": str(results),
                               "tracking.uri": uri, **more})


def searched_store(base: Path) -> tuple[Path, dict[str, Any]]:
    """Run one smoke search into ``base/mlflow.db`` (once per pytest session; later calls reuse it).

    Returns:
        The results folder and ``{"experiment", "model", "parent", "alias"}`` of the search.
    """
    results = base / "mlflow_smoke"
    done = results / "search.json"
    if not done.exists():
        from genre_ray.search.runner import run_search

        [summary] = run_search(smoke_config(results, f"sqlite:///{results / 'mlflow.db'}"))
        reg = summary["registered"]
        assert reg is not None, "the smoke search registered no model (see the log)"
        info = {"experiment": summary["task"], "model": reg["name"], "alias": reg["alias"],
                "parent": summary["tracker"].parent_id, "out_dir": summary["out_dir"]}
        done.write_text(json.dumps(info))
    return results, json.loads(done.read_text())


def group_members(pgid: int) -> list[int]:
    """Live processes (zombies left out) whose process group is ``pgid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 and a free port, as a context manager.

    Args:
        store_uri: the backend store (``sqlite:///...``).
        workdir: its working folder; proxied artifacts go to ``workdir/mlartifacts`` and its log to
            ``workdir/server.log``.
    """

    def __init__(self, store_uri: str, workdir: Path, timeout: float = 60.0, port: int | None = None) -> None:
        self.store_uri, self.workdir, self.timeout = store_uri, workdir, timeout
        self.port = port or free_port()  # a given port: the same server started again
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.left_over: list[int] = []

    def __enter__(self) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store_uri,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--artifacts-destination", str(self.workdir / "mlartifacts")]
        # The job runner (GenAI jobs, several huey consumers) is not needed to read runs and models.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"mlflow server at {self.url} did not answer /health in {self.timeout:.0f} s: "
                           f"{self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, grace: float = 15.0) -> list[int]:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace`` s; return survivors."""
        if self.proc is None:
            return self.left_over
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while group_members(pgid) and time.monotonic() < deadline:
            self.proc.poll()  # reap the leader, so it does not linger as a zombie
            time.sleep(0.2)
        if group_members(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        time.sleep(0.2)
        self.left_over = group_members(pgid)
        self.proc = None
        self.log.close()
        return self.left_over

    # ------------------------------------------------------------------------ REST
    def get(self, path: str, **params: Any) -> dict[str, Any]:
        url = f"{self.url}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
            return dict(json.loads(r.read()))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return dict(json.loads(r.read()))
