"""A fit's trial data leaves the object store when the fit is over (Tune alone keeps it for the
driver's life: it pickles the trainable with the reference inside, and Ray pins such references)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml"
MB = 2**20


def _fit(data: Any, tmp: Path, name: str) -> list[float]:
    """One Tune fit of two trials that read ``data`` (a dict or an ObjectRef) through with_parameters."""
    from ray import tune

    def _read(config: dict[str, Any], data: dict[str, Any]) -> None:  # nested: pickled by value
        tune.report({"total": float(data["x"].sum())})

    grid = tune.Tuner(tune.with_parameters(_read, data=data), tune_config=tune.TuneConfig(num_samples=2),
                      run_config=tune.RunConfig(name=name, storage_path=str(tmp), verbose=0)).fit()
    return [r.metrics["total"] for r in grid]


def _store_mb() -> float:
    from genre_ray.bench.overhead import object_store_used

    time.sleep(0.5)  # frees reach the raylet asynchronously
    return object_store_used() / MB


def test_each_fit_frees_its_trial_data(ray_session: Any, tmp_path: Path) -> None:
    from genre_ray.search.tuning import trial_data

    data = {"x": np.ones(3 * MB // 8 * 8, np.float64)}  # 24 MB: well above the inline limit
    size = data["x"].nbytes / MB
    base = _store_mb()
    for i in range(2):
        with trial_data(data) as ref:
            assert _fit(ref, tmp_path, f"freed{i}") == [float(data["x"].size)] * 2  # the trials read it
            assert _store_mb() >= base + 0.9 * size  # in the store while the block runs
        del ref  # the last handle (the Tuner's went with it)
        assert _store_mb() < base + 0.1 * size, f"fit {i} left its trial data in the object store"

    # The premise: without trial_data, Tune leaves the copy in the store after its fit.
    assert _fit(data, tmp_path, "pinned") == [float(data["x"].size)] * 2
    assert _store_mb() >= base + 0.9 * size, "Tune no longer pins its data: trial_data need not unpin"


def test_the_trainable_keeps_the_given_reference(ray_session: Any, tmp_path: Path) -> None:
    import ray._private.worker as worker

    from genre_ray._ray_workarounds import holds
    from genre_ray.config import load_config
    from genre_ray.search import tuning

    cfg = load_config(SPACE, {"output.results_dir": str(tmp_path)})
    with tuning.trial_data({"logmel": np.zeros(10)}) as ref:
        tuning._trainable(cfg, ref, None)
        held = [h for h in worker._post_init_hooks if holds(h, ref)]
        assert len(held) == 1, "with_parameters did not keep the reference trial_data gave (it put a copy)"
    assert not any(holds(h, ref) for h in worker._post_init_hooks), "the registry's hook outlived it"
