"""One command's start-up, timed in a fresh process, for ``bench featurize``'s Start-up section.

``python -m genre_ray.bench._startup SPEC.json`` does what a command does before its features, as
a user would run it: it imports the pipeline, starts or joins Ray when the spec says so (as
``genre-ray search`` does before featurizing), then runs
:func:`genre_ray.features.pipeline.featurize` into an empty cache. It prints one JSON line with the
wall-clock time (``time.time()``) at which each step ended, so that the caller, which noted the
time just before it started this process, can tell where the start-up went.

The spec (JSON): ``paths``, ``settings`` (:meth:`FeatureSettings.as_dict`), ``cache`` (an empty
folder), ``batch_files``, ``in_process`` (null: the pipeline decides), ``ray`` (``null``: no Ray
before featurizing; ``"start"``: a new local Ray of ``cpus`` CPUs; ``"join"``: the Ray session at
``address``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

#: When this module began to run (the interpreter and ``genre_ray.bench`` before it).
STARTED = time.time()


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """The steps of one start-up; returns their end times and what the pipeline reported."""
    import logging

    import pandas as pd

    from genre_ray.features import FeatureSettings, pipeline

    times = {"started": STARTED, "imported": time.time()}
    if spec.get("ray"):
        import ray

        address = spec["address"] if spec["ray"] == "join" else None
        ray.init(address=address, num_cpus=None if address else spec.get("cpus"), include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
        pipeline.ray_data_progress_off()
    times["ray"] = time.time()
    settings = FeatureSettings(**{**spec["settings"], "kinds": tuple(spec["settings"]["kinds"])})
    table = pipeline.featurize(pd.DataFrame({"path": spec["paths"]}), settings, spec["cache"],
                               spec["batch_files"], in_process=spec.get("in_process"))
    times["featurized"] = time.time()
    return {"times": times, "in_process": bool(table.info["in_process"]), "clips": len(table.clips),
            "compute_s": float(table.info.get("compute_s", 0.0))}


def main(argv: list[str]) -> int:
    print(json.dumps(run(json.loads(Path(argv[0]).read_text(encoding="utf-8")))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
