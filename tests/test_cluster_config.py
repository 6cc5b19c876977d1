"""cluster.yaml, checked offline: Ray's own launcher validation first, then the rules of this project.

Ray's checks are the ones ``ray up`` runs before it calls AWS: ``prepare_config`` (the provider's
defaults, merged setup commands, the docker block, per-type worker bounds) and ``validate_config``
(the launcher's JSON schema, the head type, the worker bounds). The AWS bootstrap that follows them
(IAM, subnets, security groups, AMIs) calls AWS, so it is not run here.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from _procs import child_env
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
GPU_WORKER = "ray.worker.gpu"

#: The EC2 instance types cluster.yaml uses: (vCPUs, NVIDIA GPUs), as AWS lists them.
INSTANCES = {"m7i.2xlarge": (8, 0), "g5.xlarge": (4, 1), "c7i.4xlarge": (16, 0)}
#: What a committed credential would look like: an access key id, or a 40-character secret key.
_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
_SECRET_SHAPE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])")
_SECRET_WORDS = ("aws_secret", "secret_access_key", "aws_access_key_id", "session_token", "password",
                 "ssh_private_key", "private key", "keyname")


def _raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER.read_text(encoding="utf-8"))


def _prepared(raw: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` makes of the file before it talks to AWS, validated by Ray."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pins() -> dict[str, str]:
    """``name -> version`` of every ``==`` pin in pyproject.toml's dependencies."""
    deps = _pyproject()["dependencies"]
    found = (re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)", dep) for dep in deps)
    return {m[1]: m[3] for m in found if m}


def _commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [c for key in keys for c in config.get(key, [])]


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a copy of the config: ``path`` names the key to set."""
    def change(config: dict[str, Any]) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _problems(config: dict[str, Any]) -> list[str]:
    """Our own rules for the file; an empty list when it keeps them all."""
    out: list[str] = []
    types = config["available_node_types"]
    head = config["head_node_type"]
    if head not in types:
        out.append(f"head_node_type: {head!r} is not a node type ({', '.join(types)})")
    for name, t in types.items():
        res, instance = t.get("resources") or {}, t["node_config"].get("InstanceType")
        if instance not in INSTANCES:
            out.append(f"{name}: instance type {instance!r} is not in the test's table {sorted(INSTANCES)}")
        elif (res.get("CPU"), res.get("GPU", 0)) != INSTANCES[instance]:
            cpus, gpus = INSTANCES[instance]
            out.append(f"{name}: resources say {res.get('CPU')} CPU, {res.get('GPU', 0)} GPU; "
                       f"{instance} has {cpus} vCPUs, {gpus} GPUs")
        if t.get("min_workers", 0) > t.get("max_workers", config["max_workers"]):
            out.append(f"{name}: min_workers {t['min_workers']} > max_workers {t.get('max_workers')}")
        if "SecurityGroupIds" in t["node_config"] or "KeyName" in t["node_config"]:
            out.append(f"{name}: node_config names its own security groups or key pair")
    gpu = {n: t for n, t in types.items() if n != head and (t.get("resources") or {}).get("GPU", 0) > 0}
    if not gpu:
        out.append("no GPU worker type")
    for name, t in gpu.items():
        if t.get("min_workers", 0) != 0 or t.get("max_workers", 0) < 1:
            out.append(f"{name}: a GPU worker type must scale from 0 (min_workers 0, max_workers >= 1)")
    total = sum(t.get("max_workers", 0) for n, t in types.items() if n != head)
    if config["max_workers"] < total:
        out.append(f"max_workers {config['max_workers']} < {total}, the sum of the worker types' max_workers")
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        if (rule.get("FromPort"), rule.get("ToPort")) != (22, 22):
            out.append(f"provider.security_group opens ports {rule.get('FromPort')}-{rule.get('ToPort')}")
    docker = config.get("docker") or {}
    keys = ("run_options", "head_run_options", "worker_run_options")
    options = [o for key in keys for o in docker.get(key, [])]
    if any(re.match(r"(-p|--publish)\b", o) for o in options):
        out.append("docker publishes a port")
    if any("0.0.0.0" in c for c in _commands(config)):
        out.append("a command binds 0.0.0.0")
    if set(config.get("auth", {})) - {"ssh_user"}:
        out.append(f"auth holds more than ssh_user: {sorted(config['auth'])}")
    return out


def _mlflow_server(commands: list[str]) -> tuple[int, list[str], int, int]:
    """The command that starts ``mlflow server``: its index, its tokens, and where in them the
    server's own arguments start and end (at the first redirect or shell operator)."""
    for i, command in enumerate(commands):
        tokens = shlex.split(command)
        for j in range(len(tokens) - 1):
            if tokens[j:j + 2] == ["mlflow", "server"]:
                end = next((k for k in range(j, len(tokens))
                            if tokens[k] in ("&", ";", "&&", "|") or tokens[k].startswith(">")), len(tokens))
                return i, tokens, j, end
    raise AssertionError("no `mlflow server` in head_start_ray_commands")


def _options(args: list[str]) -> dict[str, str | bool]:
    opts: dict[str, str | bool] = {}
    for k, token in enumerate(args):
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            nxt = args[k + 1] if k + 1 < len(args) else "--"
            opts[name] = value if eq else (nxt if not nxt.startswith("--") else True)
    return opts


# --- Ray's own validation ------------------------------------------------------------------------

def test_ray_prepares_and_validates_the_file() -> None:
    raw = _raw()
    config = _prepared(raw)
    assert config["provider"]["type"] == "aws"
    # Every command list is ours: none of the AWS defaults (a nightly Ray wheel, conda paths) slips in.
    for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key] == raw[key]
    assert not any("ray-wheels" in c or "anaconda3/envs" in c for c in _commands(config))
    assert config["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]


@pytest.mark.parametrize(("change", "error", "match"), [
    (_set("max_worker", value=4), jsonschema.ValidationError, "'max_worker' was unexpected"),
    (_set("available_node_types", GPU_WORKER, "min_workers", value="0"), jsonschema.ValidationError,
     "'0' is not of type 'integer'"),
    (_set("available_node_types", GPU_WORKER, "resources", "GPU", value=0.5), jsonschema.ValidationError,
     "0.5 is not of type 'integer'"),
    (_set("docker", "ports", value=["5000:5000"]), jsonschema.ValidationError, "'ports' was unexpected"),
    (_set("head_node_type", value="ray.head.gpu"), ValueError, "`head_node_type` must be one of"),
    (_set("available_node_types", GPU_WORKER, "min_workers", value=7), ValueError,
     "smaller than the sum of `min_workers`"),
], ids=["unknown-key", "wrong-type", "fractional-gpu", "unknown-docker-key", "missing-head-type",
        "min-workers-over-max"])
def test_ray_refuses_a_broken_copy(change: Callable[[dict[str, Any]], None], error: type[Exception],
                                   match: str) -> None:
    raw = _raw()
    change(raw)
    with pytest.raises(error, match=re.escape(match)):
        _prepared(raw)


# --- Our own rules --------------------------------------------------------------------------------

def test_the_file_keeps_our_rules() -> None:
    assert _problems(_raw()) == []
    assert _problems(_prepared(_raw())) == []


@pytest.mark.parametrize(("change", "problem"), [
    (_set("available_node_types", GPU_WORKER, "resources", "CPU", value=8), "g5.xlarge has 4 vCPUs"),
    (_set("available_node_types", GPU_WORKER, "node_config", "InstanceType", value="p5.48xlarge"),
     "not in the test's table"),
    (_set("available_node_types", GPU_WORKER, "min_workers", value=1), "must scale from 0"),
    (_set("available_node_types", GPU_WORKER, "max_workers", value=0), "must scale from 0"),
    (_set("available_node_types", "ray.worker.cpu", "min_workers", value=3), "min_workers 3 > max_workers 2"),
    (_set("max_workers", value=2), "max_workers 2 < 6"),
    (_set("provider", "security_group", "IpPermissions", value=[
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
     "opens ports 8265-8265"),
    (_set("docker", "head_run_options", value=["-p 5000:5000"]), "docker publishes a port"),
    (_set("auth", "ssh_private_key", value="~/.ssh/mine.pem"), "auth holds more than ssh_user"),
    (_set("available_node_types", GPU_WORKER, "node_config", "KeyName", value="mine"), "key pair"),
], ids=["cpu-count", "unknown-instance", "gpu-min", "gpu-max", "min-over-max", "global-max", "open-port",
        "docker-publish", "own-key", "key-pair"])
def test_our_rules_catch_a_broken_copy(change: Callable[[dict[str, Any]], None], problem: str) -> None:
    raw = _raw()
    change(raw)
    assert any(problem in p for p in _problems(raw)), _problems(raw)


def test_the_head_runs_mlflow_on_localhost_with_a_local_database_and_s3_artifacts() -> None:
    from mlflow.cli import server

    commands = _raw()["head_start_ray_commands"]
    head_start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    at, tokens, start, end = _mlflow_server(commands)
    assert at > head_start, "MLflow starts after `ray start --head`"
    opts = _options(tokens[start:end])
    known = {o for p in server.params for o in p.opts + p.secondary_opts}
    assert set(opts) <= known, f"options the installed `mlflow server` lacks: {set(opts) - known}"
    assert opts["--host"] == "127.0.0.1" and opts.get("--port", "5000") == "5000"
    db = str(opts["--backend-store-uri"])
    assert re.fullmatch(r"sqlite:///(\$HOME|~|/home/[^/]+)/\S+\.db", db), db
    assert str(opts["--artifacts-destination"]).startswith("s3://")
    assert opts.get("--serve-artifacts") is True and "--default-artifact-root" not in opts
    # In the background, detached from the launcher's SSH session, with a log file. As a module:
    # pip --user puts the `mlflow` script in the package folder's bin, which is not on PATH.
    assert tokens[start - 3:start] == ["nohup", "python", "-m"] and "&" in tokens[end:]
    assert tokens[end] == ">" and tokens[end + 1].endswith(".log")
    ray_start = shlex.split(commands[head_start].split(";")[-1])
    assert "--dashboard-host=127.0.0.1" in ray_start


def test_every_node_installs_the_project_with_the_pinned_torch() -> None:
    raw, pins = _raw(), _pins()
    setup = " && ".join(raw["setup_commands"])
    for name in ("torch", "torchaudio"):
        assert f"{name}=={pins[name]}" in setup
    assert "pip install --user -e ~/genre_ray" in setup
    # The containers carry the Ray and Python of pyproject.toml.
    lowest = re.search(r">=(\d+)\.(\d+)", _pyproject()["requires-python"])
    assert lowest, _pyproject()["requires-python"]
    python = "py" + "".join(lowest.groups())
    docker = raw["docker"]
    images = {raw["head_node_type"]: docker["head_image"]}
    for name, t in raw["available_node_types"].items():
        if name != raw["head_node_type"]:
            images[name] = (t.get("docker") or {}).get("worker_image", docker["worker_image"])
    for name, image in images.items():
        kind = "gpu" if raw["available_node_types"][name]["resources"].get("GPU", 0) else "cpu"
        assert image == f"rayproject/ray:{pins['ray']}-{python}-{kind}", name


def _torch_install() -> tuple[str, str]:
    """The setup command that installs torch: its guard, and the install run when the guard fails."""
    [command] = [c for c in _raw()["setup_commands"] if "torch==" in c]
    guard, sep, install = command.partition(" || ")
    assert sep and "||" not in install, command
    return guard, install


def test_torch_is_installed_only_when_the_pinned_versions_do_not_import() -> None:
    """A node's later starts skip the download: the guard passes where the pinned torch imports
    (this test's own environment), and fails where another version does."""
    pins = _pins()
    guard, install = _torch_install()
    assert shlex.split(install) == ["pip", "install", "--user", f"torch=={pins['torch']}",
                                    f"torchaudio=={pins['torchaudio']}"]
    assert pins["torch"] == pins["torchaudio"] and guard.count(f"'{pins['torch']}'") == 1, guard
    # The venv's own torch (pinned by pyproject.toml) passes; a pin it does not have fails.
    assert subprocess.run(["bash", "-c", guard], env=child_env(), timeout=120).returncode == 0
    other = guard.replace(f"'{pins['torch']}'", "'0.0.1'")
    assert subprocess.run(["bash", "-c", other], env=child_env(), timeout=120).returncode == 1


def test_installed_packages_live_on_the_node_s_disk() -> None:
    """The container is made afresh at every start (docker run --rm); what pip installs must not be.

    Every pip install goes to Python's user site (--user), PYTHONUSERBASE points it at a folder
    mounted from the node's disk, made by initialization_commands as the node's own user.
    """
    raw = _raw()
    options = [shlex.split(o) for o in raw["docker"]["run_options"]]
    env = dict(o[1].partition("=")[::2] for o in options if o[0] in ("--env", "-e"))
    volumes = dict(reversed(o[1].split(":")[:2]) for o in options if o[0] in ("--volume", "-v"))
    base = env.get("PYTHONUSERBASE")
    assert base and base in volumes, (env, volumes)
    home = f"/home/{raw['auth']['ssh_user']}/"
    host = volumes[base]
    assert host.startswith(home), host
    made = [shlex.split(c) for c in raw["initialization_commands"]]
    assert any(c[:2] == ["mkdir", "-p"] and "~/" + host[len(home):] in c for c in made), made
    # No node type replaces the run options that hold the volume.
    for name, t in raw["available_node_types"].items():
        assert not {"run_options", "worker_run_options"} & set(t.get("docker") or {}), name
    keys = ("setup_commands", "head_setup_commands", "worker_setup_commands")
    parts = [part for key in keys for command in raw.get(key) or [] for part in command.split(" || ")]
    pips = [part for part in parts if "pip install" in part]
    assert pips and all(shlex.split(c)[:3] == ["pip", "install", "--user"] for c in pips), pips


def test_file_mounts_bring_the_repository_without_local_state() -> None:
    raw = _raw()
    assert (CLUSTER.parent / raw["file_mounts"]["~/genre_ray"]).resolve() == ROOT
    assert _pyproject()["name"] == "genre_ray"
    assert {".venv", ".git", "results", "mlflow.db"} <= set(raw["rsync_exclude"])


def test_no_credentials_in_the_file() -> None:
    text = CLUSTER.read_text(encoding="utf-8")
    assert not _KEY_ID.search(text)
    assert not _SECRET_SHAPE.search(text), _SECRET_SHAPE.search(text)
    lowered = text.lower()
    assert [w for w in _SECRET_WORDS if w in lowered] == []


# --- The search's resources against the node types -----------------------------------------------

@pytest.mark.parametrize(("gpu", "cpu", "fits"),
                         [(0.25, 1, True), (1, 4, True), (1, 5, False), (2, 1, False)])
def test_gpu_trials_fit_a_node_the_autoscaler_can_start(tmp_path: Path, gpu: float, cpu: float,
                                                        fits: bool) -> None:
    """The search reads the launcher's config on the head (~/ray_bootstrap_config.yaml) to tell a
    trial the autoscaler can place from one that would pend for ever; here with no node up yet."""
    from genre_ray.config import load_config
    from genre_ray.search.tuning import ResourceError, check_resources

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump(_prepared(_raw())), encoding="utf-8")
    cfg = load_config(ROOT / "search_spaces" / "cnn.yaml", {"resources.gpu": gpu, "resources.cpu": cpu})
    if fits:
        check_resources(cfg, nodes=[], autoscaler_config=bootstrap)
    else:
        with pytest.raises(ResourceError, match="no node of this Ray cluster"):
            check_resources(cfg, nodes=[], autoscaler_config=bootstrap)


def test_four_quarter_gpu_trials_share_one_gpu_worker() -> None:
    """README: resources.gpu 0.25 puts four trials on a card; a g5.xlarge has the CPUs for that at cpu 1."""
    res = _raw()["available_node_types"][GPU_WORKER]["resources"]
    assert min(res["CPU"] // 1, res["GPU"] / 0.25) == 4
