"""``tag``'s actors timed from the outside, for :mod:`genre_ray.bench.tag`.

Its own module, imported only when a timed run starts: it imports :mod:`genre_ray.serving.tag`
(pandas, pyarrow), which ``python -m genre_ray.bench --help`` should not pay for, and the actors
import it by name to build :class:`TimedPredictor`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from genre_ray.serving import tag
from genre_ray.serving.tag import Predictor

CALL_TIMES_ACTOR = "genre_ray-bench-tag-call-times"


class CallTimes:
    """A Ray actor (made in :func:`timed_calls`) that keeps the wall-clock span of every actor call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, int]] = []

    def add(self, start: float, end: float, rows: int) -> None:
        self.calls.append((start, end, rows))

    def get(self) -> list[tuple[float, float, int]]:
        return self.calls


class TimedPredictor(Predictor):
    """``tag``'s :class:`~genre_ray.serving.tag.Predictor`, timed from the outside: each call's
    wall-clock start and end (comparable across the actors and the driver) go to the
    :class:`CallTimes` actor, after the call, so the call itself is timed as ``tag`` runs it."""

    def __call__(self, batch: Any) -> Any:
        import ray

        start = time.time()
        table = super().__call__(batch)
        end = time.time()
        ray.get(ray.get_actor(CALL_TIMES_ACTOR).add.remote(start, end, table.num_rows))
        return table


@contextlib.contextmanager
def timed_calls() -> Iterator[list[tuple[float, float, int]]]:
    """While the block runs, ``run_tag``'s actors are :class:`TimedPredictor`; at its end the list
    yielded holds every call's ``(start, end, rows)``, in wall-clock seconds."""
    import ray

    actor: Any = ray.remote(num_cpus=0)(CallTimes)
    collector = actor.options(name=CALL_TIMES_ACTOR).remote()
    ray.get(collector.get.remote())  # started before the timing begins
    calls: list[tuple[float, float, int]] = []
    tag.Predictor = TimedPredictor  # type: ignore[misc]
    try:
        yield calls
    finally:
        tag.Predictor = Predictor  # type: ignore[misc]
        calls.extend(ray.get(collector.get.remote()))
        ray.kill(collector)
