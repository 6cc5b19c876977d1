"""The Ray Tune trainable: :func:`~genre_ray.training.loop.run_trial` reporting to Tune.

The only module of :mod:`genre_ray.training` that imports Ray. The features of the train and
validation songs reach every trial through the object store once (``tune.with_parameters``); a
trial never reads the cache or the audio, and the test songs are not in what it receives.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from genre_ray._ray_workarounds import quiet_checkpoint_lines
from genre_ray.training.loop import run_trial
from genre_ray.training.wrappers import TrialData


class TuneReporter:
    """The trial runs in Tune: ``tune.report`` with a checkpoint every epoch, resume from Tune's."""

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else nullcontext(None)

    def report(self, metrics: dict[str, Any], save: Callable[[str], None]) -> None:
        import ray
        from ray import tune

        # The node is reported so that the leaderboard's trials can be traced to their machines.
        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        with tempfile.TemporaryDirectory() as d:
            save(d)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def train_trial(config: dict[str, Any], data: dict[str, TrialData | list[TrialData]],
                spec: dict[str, Any]) -> None:
    """Tune function trainable: :func:`run_trial` reporting to Tune."""
    quiet_checkpoint_lines()  # the driver reports progress instead
    run_trial(config, data, spec, TuneReporter())

