"""Song-level train/validation/test splits, stratified by genre and seeded.

Splits are decided on songs before any clip exists, so no song can have clips on both sides.
Every class with at least three songs gets at least one song in each split; the split sizes
follow the fractions per class (largest remainder), which keeps the split stratified even on
tiny collections where scikit-learn's stratified splitters refuse to run.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "split_id", "split_report", "split_songs"]

SPLITS = ("train", "val", "test")


def split_songs(songs: pd.DataFrame, val_fraction: float, test_fraction: float,
                seed: int) -> pd.Series:
    """Assign every song to train, val or test.

    Args:
        songs: one row per song with ``song_id`` and ``label``.
        val_fraction: share of each class's songs for validation.
        test_fraction: share of each class's songs for the held-out test.
        seed: the shuffle seed; the same seed and songs give the same split.

    Returns:
        A Series indexed like ``songs`` with values in :data:`SPLITS`.
    """
    if songs["song_id"].duplicated().any():
        dup = songs.loc[songs["song_id"].duplicated(), "song_id"].iloc[0]
        raise ValueError(f"song_id {dup!r} appears twice; a manifest has one row per song")
    out = pd.Series("train", index=songs.index, dtype=object)
    for label in sorted(songs["label"].unique()):
        # Order songs by id first so the result does not depend on the manifest's row order.
        members = songs.index[songs["label"] == label]
        members = members[np.argsort(songs.loc[members, "song_id"].to_numpy())]
        digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        members = members[rng.permutation(len(members))]
        n = len(members)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_test, n_val = max(1, n_test), max(1, n_val)
        elif n == 2:
            n_test, n_val = 1, 0
        else:
            n_test, n_val = 0, 0
        while n - n_test - n_val < 1 and n_val + n_test > 0:  # keep a training song
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        out[members[:n_test]] = "test"
        out[members[n_test:n_test + n_val]] = "val"
    return out


def split_report(songs: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Songs per class and split, with totals: the table every report shows."""
    table = pd.crosstab(songs["label"], split).reindex(columns=list(SPLITS), fill_value=0)
    table.loc["total"] = table.sum()
    return table


def split_id(song_ids: pd.Series, split: pd.Series) -> str:
    """A short fingerprint of which song is in which split (test scores compare only if equal)."""
    pairs = sorted(zip(song_ids.astype(str), split.astype(str)))
    return hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]
