"""What the featurize and memory benchmarks share: their demo collection and a warmed Ray.

Its own module, so that :mod:`genre_ray.bench.featurize` and :mod:`genre_ray.bench.memory` each
import it and not each other.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from genre_ray.data.demo import DemoSpec

DEMO_SPEC = DemoSpec(genres=8, songs_per_genre=13, seconds=30.0)  # 104 songs, 1040 clips


def start_ray(manifest: pd.DataFrame, settings: Any, cpus: int,
              cache_root: Path) -> dict[str, Any]:
    """Start Ray (unless it runs) and warm every worker with a Ray Data featurize run of one file per task.

    Returns:
        The pipeline's start-up: ``ray_init_s``, ``warm_s``, and ``cores`` (the CPUs Ray has).
    """
    import ray

    from genre_ray.features.pipeline import featurize

    t0 = time.perf_counter()
    if not ray.is_initialized():
        # A Ray of its own, of ``cpus`` CPUs: not a cluster that someone's ``ray start`` left on this
        # machine, which ray.init() without an address would join (unless RAY_ADDRESS names one).
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, num_cpus=cpus if address == "local" else None, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    init_s = time.perf_counter() - t0
    cores = int(ray.cluster_resources().get("CPU", cpus))
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bench-warm-", dir=cache_root) as warm:
        featurize(manifest.iloc[:2 * cores][["path"]], settings, warm, batch_files=1, in_process=False)
    return {"ray_init_s": init_s, "warm_s": time.perf_counter() - t0 - init_s, "cores": cores}
