"""Trial data leaves the object store once its Tuner is done (Tune itself keeps it for the driver's life)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml"


def _refs(ray: Any) -> set[str]:
    """The object references this driver holds (owned or borrowed)."""
    return set(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


def test_trial_data_is_freed_after_the_fit(ray_session: Any, tmp_path: Path) -> None:
    from genre_ray import tuning
    from genre_ray.config import load_config

    cfg = load_config(SPACE, {"output.results_dir": str(tmp_path)})
    before = _refs(ray_session)
    tuning._trainable(cfg, {"logmel": np.ones(1_000_000, np.float32)}, None)
    added = _refs(ray_session) - before
    assert added, "with_parameters put nothing in the object store"
    gc.collect()
    assert _refs(ray_session) & added, "Tune no longer keeps its references: release_trial_data is not needed"

    class Fails:
        def fit(self) -> None:
            raise RuntimeError("a fit that fails")

    with pytest.raises(RuntimeError, match="a fit that fails"):
        tuning.fit(Fails())  # released however the fit ends
    gc.collect()
    assert not _refs(ray_session) & added
    assert tuning.release_trial_data() == 0  # nothing left of ours
