"""The zero-shot baseline: a pretrained tagger's genre tags, mapped onto a task's classes.

No training: a song's score for a class is the highest song-mean probability among the network's
tags that the genre mapping (``search_spaces/mappings/*.yaml``, :mod:`genre_ray.data.tags`) sends to
that class, and the prediction is the best-scoring class. Classes that no tag maps to are never
predicted, which is part of what the row shows: what training adds over the tagger alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genre_ray.features.pretrained import NETWORKS

__all__ = ["TAGGRAM_KINDS", "tag_classes", "taggram_columns", "zero_shot_probs"]

#: Kinds whose taggram holds genre tags (the Million Song Dataset networks' Last.fm tags).
TAGGRAM_KINDS = ("musicnn_msd", "vgg_msd")


def taggram_columns(kind: str, layer: str) -> slice | None:
    """Where the taggram sits in a clip's embedding of ``kind`` (its means come first whatever the
    pooling), or None when the layer has no taggram."""
    if layer not in ("taggram", "all"):
        return None
    return slice(0, len(NETWORKS[kind].labels))


def tag_classes(kind: str, classes: list[str], mapping: str | Path | Any) -> np.ndarray:
    """``(n_tags, n_classes)`` 0/1 matrix: which of ``kind``'s tags map to which class."""
    from genre_ray.data.tags import load_mapping

    rules = load_mapping(mapping)
    assert rules is not None
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(NETWORKS[kind].labels), len(classes)), np.float32)
    for t, tag in enumerate(NETWORKS[kind].labels):
        genre = rules.map(tag)
        if genre in index:
            out[t, index[genre]] = 1.0
    return out


def zero_shot_probs(taggram: np.ndarray, song: np.ndarray, n_songs: int, matrix: np.ndarray) -> np.ndarray:
    """Song-level class scores ``(n_songs, n_classes)``, normalised to sum to 1 per song.

    Args:
        taggram: ``(n_clips, n_tags)`` tag probabilities per clip.
        song: ``(n_clips,)`` song index of each clip.
        n_songs: the number of songs.
        matrix: :func:`tag_classes`.
    """
    sums = np.zeros((n_songs, taggram.shape[1]), np.float64)
    np.add.at(sums, song, taggram)
    mean = sums / np.maximum(np.bincount(song, minlength=n_songs), 1)[:, None]
    scores = np.where(matrix[None] > 0, mean[:, :, None], 0.0).max(axis=1)  # (songs, classes)
    total = scores.sum(axis=1, keepdims=True)
    uniform = np.full_like(scores, 1.0 / scores.shape[1])
    return np.where(total > 0, scores / np.where(total > 0, total, 1.0), uniform)
