"""The cluster recipe of docs/cluster.md, run as written: its ``ray job submit`` command on a real
two-node Ray cluster on this machine.

- **The cluster.** ``ray start --head`` (its own temp folder, 1 CPU, the dashboard and job API on a
  free port) and a second node, ``ray start --address=...`` with its own temp folder, ports and node
  IP (127.0.0.2, the loopback answers for all of 127/8). Two node IPs are two hosts to the search,
  so its shared-storage check runs as on a real cluster. Each node declares 1 GPU, a logical one:
  the command's ``--gpus-per-trial 0.25`` is then placed as written, one trial per node, and torch,
  finding no card, trains on the CPU.
- **Storage.** The bucket is moto's S3 server on 127.0.0.1. The nodes get its address and test keys
  from their environment, as cluster nodes get theirs from an instance profile. MLflow is a real
  ``mlflow server`` on a free port, as on the head.
- **The command** is read out of the docs. Only its addresses, the bucket's name and the results
  folder are swapped for this machine's, and :data:`TINY` shrinks the search (2 trials of 1 epoch on
  a tiny demo collection, no refit). A docs edit that drops any of them fails here.
- **Stopping.** Every process started here carries a marker in its environment (Ray's workers and
  drivers inherit it) or has a file open under the cluster's temp folder (a node's dashboard agent
  may get only part of its raylet's environment), and all of them are stopped at the end, pass or
  fail. ``ray stop`` is not used: it stops every Ray process on the machine, other sessions' too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _mlflow_server import MlflowServer, free_port
from _procs import child_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cluster.md"
MARKER = "GENRE_RAY_TEST_CLUSTER_JOB"
BUCKET = "genre-ray-cluster-job"
WORKER_IP = "127.0.0.2"
#: The two lines that put the cache and Tune's storage in the bucket.
SHARED_SETS = ("features.cache_dir=", "search.storage_path=")
#: Added to the docs' search: 2 trials of 1 epoch on a tiny demo collection, and the best trial's own
#: checkpoint (read back from the bucket) scored and registered instead of a refit.
TINY = ("--smoke", "--set", "search.refit=false")


def docs_command() -> str:
    """The ``ray job submit`` command of docs/cluster.md, its continuation lines joined."""
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
              if "ray job submit" in b]
    assert len(blocks) == 1, f"{DOCS}: {len(blocks)} bash blocks with `ray job submit`, expected 1"
    lines = blocks[0].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ray job submit"))
    parts = []
    for line in lines[start:]:
        parts.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(parts)


def substituted(command: str, subs: dict[str, str]) -> list[str]:
    """``command`` with each AWS-cluster value swapped for this machine's, as an argv."""
    for old, new in subs.items():
        assert old in command, f"{DOCS}'s `ray job submit` no longer names {old!r}: {command}"
        command = command.replace(old, new)
    return shlex.split(command)


def _marked(token: str, temp: Path) -> list[int]:
    """Live processes (zombies left out) of this test's cluster: those whose environment carries its
    marker, and those with a file open under its Ray temp folder. A node's raylet starts its dashboard
    agent with only some of its own environment, and on one node of two the marker was left out: that
    agent outlived the cluster and, with its GCS gone, spun a core at 100 % for a minute or more."""
    want, found = f"{MARKER}={token}".encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if (want in environ or _has_open_file_under(entry, temp)) and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def _has_open_file_under(proc: Path, folder: Path) -> bool:
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).startswith(f"{folder}/"):
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def _stop_marked(token: str, temp: Path, grace: float = 5.0) -> list[int]:
    """SIGTERM every process of the cluster, SIGKILL what is left after ``grace`` s; return the survivors."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in _marked(token, temp):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _marked(token, temp) and time.monotonic() < deadline:
            time.sleep(0.2)
    return _marked(token, temp)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - 127.0.0.1 only
        return json.loads(r.read())


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    out = subprocess.run([ray, "start", *args, "--disable-usage-stats"], env=env, capture_output=True,
                         text=True, timeout=180)
    log.write_text(out.stdout + out.stderr)
    assert out.returncode == 0, f"ray start {' '.join(args)}:\n{out.stdout[-2000:]}{out.stderr[-3000:]}"


def _node_ports(ports: Iterator[int]) -> list[str]:
    """The ports a node binds, all free ones: two Rays on one machine must not share any."""
    names = ("node-manager-port", "object-manager-port", "runtime-env-agent-port",
             "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "metrics-export-port")
    return [f"--{name}={next(ports)}" for name in names]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import boto3
    from moto.server import ThreadedMotoServer

    work = tmp_path_factory.mktemp("cluster_job")
    # Ray's socket paths live under its temp folder and must stay short (108 bytes on Linux).
    temp = Path(tempfile.mkdtemp(prefix="grj-", dir="/tmp"))
    token = uuid.uuid4().hex
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    # The nodes' own credentials and endpoint, as an instance profile gives them on AWS.
    env = child_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                    AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
                    AWS_EC2_METADATA_DISABLED="true",
                    RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **{MARKER: token})
    env.pop("RAY_ADDRESS", None)
    found: set[int] = set()
    while len(found) < 15:
        found.add(free_port())
    ports = iter(sorted(found))
    gcs, dashboard, client = next(ports), next(ports), next(ports)
    url = f"http://127.0.0.1:{dashboard}"
    mlflow_server = MlflowServer(f"sqlite:///{work / 'mlflow.db'}", work / "mlflow")
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(1) as pool:  # MLflow starts while Ray does
            mlflow_up = pool.submit(mlflow_server.__enter__)
            # The head takes this machine's own address; the second node says 127.0.0.2.
            _ray_start(["--head", f"--port={gcs}", "--num-cpus=1", "--num-gpus=1",
                        f"--temp-dir={temp / 'head'}", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                        f"--ray-client-server-port={client}",
                        *_node_ports(ports)], env, work / "ray_head.log")
            _ray_start([f"--address=127.0.0.1:{gcs}", f"--node-ip-address={WORKER_IP}", "--num-cpus=1",
                        "--num-gpus=1", '--resources={"second_node": 1}', f"--temp-dir={temp / 'worker'}",
                        *_node_ports(ports)], env, work / "ray_worker.log")
            mlflow_up.result()
        deadline = time.monotonic() + 60
        nodes: list[dict[str, Any]] = []
        while len(nodes) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            listed = _get(f"{url}/api/v0/nodes")["data"]["result"]["result"]  # Ray's state API
            nodes = [n for n in listed if n["state"] == "ALIVE"]
        assert len(nodes) == 2, nodes
        yield {"work": work, "env": env, "dashboard": url, "gcs": f"127.0.0.1:{gcs}", "s3": s3,
               "mlflow": mlflow_server, "nodes": {n["node_id"]: n["node_ip"] for n in nodes},
               "started_s": time.monotonic() - t0}
    finally:
        left = _stop_marked(token, temp)
        mlflow_left = mlflow_server.stop()
        moto.stop()
        shutil.rmtree(temp, ignore_errors=True)
        assert not left and not mlflow_left, f"processes still running after the test: {left + mlflow_left}"


def _subs(cluster: dict[str, Any], results: Path) -> dict[str, str]:
    """What the docs' command names on the AWS cluster -> what it is here."""
    return {"http://127.0.0.1:8265": cluster["dashboard"], "http://127.0.0.1:5000": cluster["mlflow"].url,
            "s3://YOUR-BUCKET/": f"s3://{BUCKET}/", "/home/ray/genre_ray_state/results": str(results)}


def test_without_the_shared_storage_lines_the_search_is_refused(cluster: dict[str, Any]) -> None:
    """The docs' search minus its two --set lines: the cache and Tune's storage on the head's disk."""
    argv = substituted(docs_command(), _subs(cluster, cluster["work"] / "refused"))
    entry = argv[argv.index("--") + 1:]
    for key in SHARED_SETS:
        at = next(i for i, a in enumerate(entry) if a.startswith(key))
        assert entry[at - 1] == "--set", entry
        del entry[at - 1:at + 1]
    env = {**cluster["env"], "RAY_ADDRESS": cluster["gcs"], "MLFLOW_TRACKING_URI": cluster["mlflow"].url}
    out = subprocess.run([*entry, *TINY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-4000:]
    assert "is on this node's own disk, but the Ray cluster spans 2 hosts" in out.stderr, out.stderr[-4000:]


@pytest.fixture(scope="module")
def job(cluster: dict[str, Any]) -> dict[str, Any]:
    results = cluster["work"] / "results"
    argv = substituted(docs_command(), _subs(cluster, results))
    assert argv[:3] == ["ray", "job", "submit"] and sum(a.startswith(SHARED_SETS) for a in argv) == 2, argv
    t0 = time.monotonic()
    out = subprocess.run([*argv, *TINY], cwd=ROOT, env=cluster["env"], capture_output=True, text=True,
                         timeout=480)
    wall = time.monotonic() - t0
    (cluster["work"] / "job.log").write_text(out.stdout + out.stderr)
    jobs = _get(f"{cluster['dashboard']}/api/jobs/")
    return {"rc": out.returncode, "log": out.stdout + out.stderr, "jobs": jobs, "wall_s": wall,
            "results": results}


def _s3_keys(cluster: dict[str, Any], prefix: str) -> list[str]:
    pages = cluster["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_docs_job_succeeds(job: dict[str, Any]) -> None:
    assert job["rc"] == 0, job["log"][-6000:]
    submitted = [j for j in job["jobs"] if j["type"] == "SUBMISSION"]  # the refused search was a driver
    assert [j["status"] for j in submitted] == ["SUCCEEDED"], job["jobs"]
    assert "genre_ray.search" in submitted[0]["entrypoint"]
    print(f"\njob: {job['wall_s']:.0f} s from `ray job submit` to its end")


def test_trials_ran_on_both_nodes(cluster: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune's own results, in the bucket, name the node each trial reported from."""
    results = [k for k in _s3_keys(cluster, "genre_ray/ray/") if k.endswith("/result.json")]
    assert len(results) == 2, results
    seen: dict[str, str] = {}
    for key in results:
        body = cluster["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        for line in body.splitlines():
            row = json.loads(line)
            seen[row["node_id"]] = row["node_ip"]
    assert seen == cluster["nodes"], (seen, cluster["nodes"])
    assert WORKER_IP in seen.values()
    print(f"\nnodes the trials ran on: {sorted(seen.values())}")


def test_the_cache_and_checkpoints_are_in_the_bucket(cluster: dict[str, Any], job: dict[str, Any]) -> None:
    assert any(k.endswith("/_genre_ray_cache.json") for k in _s3_keys(cluster, "genre_ray/cache/"))
    assert any("/checkpoint_" in k for k in _s3_keys(cluster, "genre_ray/ray/"))
    assert not (job["results"] / "cache").exists() and not (job["results"] / "ray").exists()


def test_the_model_is_registered_in_mlflow(cluster: dict[str, Any], job: dict[str, Any]) -> None:
    import mlflow

    client = mlflow.MlflowClient(cluster["mlflow"].url)
    version = client.get_model_version_by_alias("genre-demo", "champion")
    assert str(version.version) == "1" and version.run_id
    assert client.get_run(version.run_id).info.status == "FINISHED"
