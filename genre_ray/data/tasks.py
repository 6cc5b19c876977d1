"""Genre tasks: which question a search answers about a collection's raw labels.

A task turns raw labels into the task's classes:

- all classes (no options), or a ``classes:`` subset;
- ``merge:`` several raw labels into one class, e.g. ``rock: [rock, prog rock, classic rock]``;
- ``positive:`` one-versus-rest, e.g. ``positive: prog rock`` gives "prog rock" against
  ``negative`` ("the world" by default).

Raw labels are matched ignoring case and surrounding or repeated spaces. Classes with fewer
than ``min_songs`` songs are dropped, and the drop is reported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["TaskError", "TaskSpec", "apply_task", "normalise_label"]

log = logging.getLogger(__name__)


class TaskError(ValueError):
    """A task that leaves nothing to learn (one class, or too few songs)."""


def normalise_label(label: Any) -> str:
    """Case- and spacing-insensitive form of a label, for matching."""
    return re.sub(r"\s+", " ", str(label)).strip().casefold()


@dataclass(frozen=True)
class TaskSpec:
    """One genre task, as written under ``tasks:`` in a search space."""

    name: str
    classes: tuple[str, ...] = ()
    merge: dict[str, tuple[str, ...]] = field(default_factory=dict)
    positive: str | None = None
    negative: str = "the world"
    min_songs: int = 3

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> TaskSpec:
        """Build from a validated ``tasks:`` entry."""
        merge = {str(k): tuple(str(x) for x in v) for k, v in (raw.get("merge") or {}).items()}
        return cls(name=raw["name"], classes=tuple(str(c) for c in raw.get("classes") or ()), merge=merge,
                   positive=raw.get("positive"), negative=raw.get("negative") or "the world",
                   min_songs=int(raw.get("min_songs", 3)))


def _class_of(spec: TaskSpec) -> dict[str, str] | None:
    """normalised raw label -> task class, or None when every raw label is its own class."""
    if spec.positive is not None:
        return {normalise_label(spec.positive): spec.positive}
    mapping: dict[str, str] = {}
    for target, sources in spec.merge.items():
        for source in (*sources, target):
            mapping[normalise_label(source)] = target
    for name in spec.classes:
        mapping.setdefault(normalise_label(name), name)
    return mapping or None


def apply_task(manifest: pd.DataFrame, spec: TaskSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Relabel a manifest for a task.

    Args:
        manifest: one row per song with the raw ``label``.
        spec: the task.

    Returns:
        ``(songs, report)``: the task's songs with ``raw_label`` kept and ``label`` set to the
        task class; and one row per task class and per dropped class with its song count and
        what happened to it.

    Raises:
        TaskError: when fewer than two classes are left.
    """
    songs = manifest.assign(raw_label=manifest["label"])
    mapping = _class_of(spec)
    keys = songs["raw_label"].map(normalise_label)
    if spec.positive is not None:
        songs["label"] = keys.map(mapping).fillna(spec.negative)
    elif mapping is not None:
        songs["label"] = keys.map(mapping)
        left_out = songs["label"].isna()
        if left_out.any():
            log.info("task %s: %d songs have labels outside the task and are left out", spec.name,
                     int(left_out.sum()))
        songs = songs[~left_out]
    else:
        # Spelling variants of one label ("Hip-Hop ", "hip-hop") are one class, named as first seen.
        first = songs.groupby(keys, sort=False)["raw_label"].first()
        songs["label"] = keys.map(first)
    counts = songs["label"].value_counts()
    small = counts[counts < spec.min_songs]
    report = pd.DataFrame({"class": counts.index, "songs": counts.to_numpy(),
                           "status": ["dropped: fewer than min_songs" if c in small.index else "kept"
                                      for c in counts.index]})
    for name, n in small.items():
        log.warning("task %s: class %r has %d songs (< min_songs %d) and is dropped", spec.name, name, n,
                    spec.min_songs)
    songs = songs[~songs["label"].isin(small.index)].reset_index(drop=True)
    if songs["label"].nunique() < 2:
        raise TaskError(f"task {spec.name}: fewer than two classes with at least {spec.min_songs} songs "
                        f"remain ({', '.join(f'{c}: {int(n)}' for c, n in counts.items())}); lower "
                        "tasks.min_songs or add songs")
    return songs, report
