"""Shared fixtures: generated audio only, one small Ray session, no network, no GPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")

# pytest-xdist (pyproject's addopts run the suite on 2 workers): each worker's Ray sessions, and the
# `ray start` clusters its tests make, live in a temp folder of its own. Ray's `ray.init()` without an
# address joins the newest cluster named in <temp>/ray/ray_current_cluster, so with one shared folder a
# search in one worker could join a cluster that a test in the other worker started.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _XDIST_WORKER:
    _ray_tmp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / f"gr-{_XDIST_WORKER}"  # short: socket paths
    _ray_tmp.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_TMPDIR"] = str(_ray_tmp)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: The slowest files (each a minute or more of CPU on 2 cores), in this order, before all others.
#: With `--dist loadfile --no-loadscope-reorder` (pyproject's addopts) a file runs whole on one worker,
#: in collection order; a slow file collected late ran alone for minutes after the other worker had
#: finished. Those that start their own Ray (command-line searches, real clusters) come first: a worker
#: starts the shared :func:`ray_session` at its first file that needs it, and an idle local Ray burns
#: about 4.8 CPU-seconds a minute (docs/benchmarks.md), so it should not wait through them.
SLOW_FIRST = ("test_concurrent.py", "test_resume.py", "test_kills.py", "test_tracking_outage.py",
              "test_cluster_job.py", "test_cluster_nodes.py", "test_smoke_spaces.py", "test_sources_e2e.py",
              "test_tag.py", "test_predict.py", "test_bench_zoo.py", "test_bench_overhead.py", "test_search_e2e.py",
              "test_pretrained.py", "test_mlflow_server.py", "test_ensemble_e2e.py")


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package's bytecode once, where the environment says never to write it.

    With ``PYTHONDONTWRITEBYTECODE`` set (as on this project's machines), every process compiled
    genre_ray from source on import: about 0.5 CPU-seconds in each of the 150 or so processes the
    suite starts (command-line runs, Ray trial and Ray Data workers). Python reads bytecode that is
    there even when told not to write it; it is git-ignored, and a changed source is recompiled.
    """
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):  # once, in the main process
        import compileall

        compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "genre_ray"), quiet=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The :data:`SLOW_FIRST` files first; the rest keep their order (the sort is stable)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-genre demo collection, 6 songs each of 4 s."""
    from genre_ray.data.demo import DemoSpec, ensure_demo_collection

    return ensure_demo_collection(tmp_path_factory.mktemp("demo") / "collection",
                                  DemoSpec(genres=3, songs_per_genre=6, seconds=4.0))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray with 2 CPUs for every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        # address="local": a Ray of its own, never a cluster another test's `ray start` left running
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def joined_env(ray_session) -> dict[str, str]:
    """The environment for a command-line run (search, tag) that joins this worker's Ray instead of starting one.

    A search run as ``RAY_ADDRESS=<head> python -m genre_ray.search ...`` on a cluster does just this.
    A private local Ray costs a command-line search about 11 CPU-seconds of its own start-up
    (docs/benchmarks.md); the tests whose subject is not that private Ray (a kill at a pause point, a
    killed tag run, a tracking server going away, a second round of two searches at once) join it.
    Its auth mode and token stay as they are: a CLI that set its own could not connect.
    """
    from _procs import child_env

    return child_env(RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)


def write_tone(path: Path, seconds: float = 2.0, sr: int = 22050, channels: int = 1,
               freq: float = 440.0, subtype: str = "PCM_16", fmt: str | None = None) -> Path:
    """Write a sine tone with a little noise, the simplest real audio file a test needs."""
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sr, subtype=subtype, format=fmt)
    return path
