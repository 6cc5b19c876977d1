"""Song-level train/validation/test splits, stratified by genre and seeded.

Splits are decided on songs before any clip exists, so no song can have clips on both sides.

- Without artists, every class with at least three songs gets at least one song in each split;
  the split sizes follow the fractions per class, which keeps the split stratified even on tiny
  collections where scikit-learn's stratified splitters refuse to run.
- With artists (any non-empty ``artist``), all songs of an artist go to one split: scikit-learn's
  ``StratifiedGroupKFold`` makes a grouped split, stratified as far as the groups allow. Songs
  with no known artist are groups of their own.
- A predefined ``split`` column (GTZAN's fault-filtered lists, FMA's official split) is used as
  it is, after its names are normalised (training -> train, validation/valid -> val).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "SplitError", "assign_splits", "grouped_split", "predefined_split", "song_folds",
           "split_id", "split_report", "split_songs"]

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test", "testing": "test"}


class SplitError(ValueError):
    """A split that cannot be made honestly; the message says what is missing."""


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
    pairs = sorted(zip(song_ids.astype(str), split.astype(str), strict=True))
    return hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]


def _groups(songs: pd.DataFrame) -> pd.Series:
    artist = songs["artist"] if "artist" in songs else pd.Series(None, index=songs.index, dtype=object)
    known = artist.notna() & (artist.astype(str).str.strip() != "")
    return pd.Series(np.where(known, "artist:" + artist.astype(str).str.strip().str.casefold(),
                              "song:" + songs["song_id"].astype(str)), index=songs.index)


def grouped_split(songs: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Train/val/test with every artist's songs on one side, stratified as far as groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _groups(songs).to_numpy()
    labels = songs["label"].astype(str).to_numpy()
    out = pd.Series("train", index=songs.index, dtype=object)

    def one_fold(idx: np.ndarray, fraction: float, salt: int) -> np.ndarray:
        n_folds = max(2, min(int(round(1 / fraction)), len(set(groups[idx]))))
        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed + salt)
        import warnings

        with warnings.catch_warnings():  # small classes: "least populated class" is expected here
            warnings.simplefilter("ignore", UserWarning)
            _, held = next(cv.split(idx, labels[idx], groups[idx]))
        return idx[held]

    everything = np.arange(len(songs))
    test = one_fold(everything, test_fraction, 0)
    rest = np.setdiff1d(everything, test)
    val = one_fold(rest, val_fraction / (1 - test_fraction), 1)
    out.iloc[test] = "test"
    out.iloc[val] = "val"
    return out


def predefined_split(songs: pd.DataFrame) -> pd.Series:
    """The manifest's own ``split`` column, names normalised; refuses gaps and unknown names."""
    names = songs["split"].astype(str).str.strip().str.casefold().map(_SPLIT_NAMES)
    bad = songs.loc[names.isna(), "split"]
    if len(bad):
        raise SplitError(f"split column: {bad.iloc[0]!r} of song {songs.loc[bad.index[0], 'song_id']!r} is not "
                         f"one of {', '.join(sorted(_SPLIT_NAMES))}; fix the value or drop the column")
    missing = [s for s in ("train", "val") if s not in set(names)]
    if missing:
        raise SplitError(f"split column has no {' or '.join(missing)} songs; a search needs train and val "
                         "(test is optional but then nothing is held out)")
    return names


#: ``split.folds: auto`` cross-validates with AUTO_FOLDS folds below this many non-test songs. From
#: ``python -m genre_ray.bench folds`` (results/bench_folds.md): choosing on 5 folds instead of one
#: validation split picked better SVMs up to 1000 songs (4.3 points of regret at 300, 0.3 at 1000),
#: and no longer at 2000 or 3000.
AUTO_FOLDS_BELOW = 2000
AUTO_FOLDS = 5


def auto_folds(folds: int | str | None, dev_songs: int) -> int | None:
    """``split.folds`` resolved: ``auto`` is :data:`AUTO_FOLDS` below :data:`AUTO_FOLDS_BELOW` non-test songs."""
    if folds == "auto":
        return AUTO_FOLDS if dev_songs < AUTO_FOLDS_BELOW else None
    return int(folds) if folds else None


def song_folds(songs: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Fold index of every song for k-fold cross-validation, stratified, and grouped by artist.

    Raises:
        SplitError: when there are fewer groups (artists, or songs) than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _groups(songs).to_numpy()
    if len(set(groups)) < k:
        raise SplitError(f"split.folds is {k} but only {len(set(groups))} songs/artists are left for "
                         "cross-validation; lower split.folds")
    labels = songs["label"].astype(str).to_numpy()
    if pd.Series(groups).groupby(labels).nunique().max() < k:
        # Every class is smaller than k (e.g. 2 songs a genre, 5 folds), which scikit-learn refuses:
        # deal each class's groups round the folds in turn, so the folds stay as balanced as they
        # can be and every class keeps songs in every fold's training part.
        rng = np.random.default_rng(seed)
        fold_of: dict[object, int] = {}
        for label in sorted(set(labels)):
            for g in rng.permutation(pd.unique(groups[labels == label])):
                if g not in fold_of:
                    fold_of[g] = len(fold_of) % k
        return np.array([fold_of[g] for g in groups])
    folds = np.full(len(songs), -1)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # small classes: "least populated class" is expected here
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, held) in enumerate(cv.split(np.zeros(len(songs)), songs["label"].astype(str), groups)):
            folds[held] = f
    return folds


def assign_splits(songs: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int,
                  use_predefined: bool = True) -> tuple[pd.Series, str]:
    """The split for a search, and how it was made (``predefined``, ``by artist`` or ``by song``)."""
    if use_predefined and "split" in songs and songs["split"].notna().all():
        return predefined_split(songs), "predefined"
    if "artist" in songs and songs["artist"].notna().any():
        return grouped_split(songs, val_fraction, test_fraction, seed), "by artist"
    return split_songs(songs, val_fraction, test_fraction, seed), "by song"
