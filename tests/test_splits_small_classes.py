"""k-fold cross-validation on classes smaller than k (GTZAN's 30 dev songs: 2 a genre, 5 folds)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genre_ray.data.splits import song_folds


def test_folds_on_classes_smaller_than_k_are_balanced_and_keep_every_class_in_training() -> None:
    songs = pd.DataFrame({"song_id": [f"s{i}" for i in range(20)],
                          "label": [f"g{i // 2}" for i in range(20)]})  # 10 genres of 2 songs
    folds = song_folds(songs, 5, seed=0)
    assert sorted(np.bincount(folds)) == [4, 4, 4, 4, 4]
    for f in range(5):
        assert set(songs["label"][folds != f]) == set(songs["label"])  # each genre still trains
    for _label, group in songs.groupby("label"):
        assert len(set(folds[group.index])) == 2  # its two songs validate in different folds
    assert np.array_equal(folds, song_folds(songs, 5, seed=0))
    assert not np.array_equal(folds, song_folds(songs, 5, seed=1))
