"""What trials receive: train and validation clips only; the test songs stay with the driver."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genre_ray.config import parse_config
from genre_ray.features.pipeline import FeatureTable
from genre_ray.search.runner import _split_arrays


def test_trials_never_receive_test_songs() -> None:
    songs = pd.DataFrame({"song_id": [f"s{i}" for i in range(9)], "sha": [f"h{i}" for i in range(9)],
                          "label": ["a", "b", "c"] * 3,
                          "split": ["train"] * 3 + ["val"] * 3 + ["test"] * 3})
    clips = pd.DataFrame({"sha": np.repeat(songs["sha"], 2).to_numpy(), "clip": [0, 1] * 9, "start_s": 0.0})
    # Each clip's features carry its song number, so every array can be traced back to its songs.
    x = np.repeat(np.arange(9, dtype=np.float32), 2)[:, None, None] * np.ones((1, 4, 5), np.float32)
    table = FeatureTable({"logmel": x}, clips, pd.DataFrame(), "mem", cache_hit=True)
    cfg = parse_config({})
    arrays = _split_arrays(cfg, songs, songs, table)
    trial = arrays["trial"]["logmel"]
    seen = set(np.unique(trial.x_train[:, 0, 0])) | set(np.unique(trial.x_val[:, 0, 0]))
    assert seen == {0, 1, 2, 3, 4, 5}
    assert set(np.unique(arrays["test"]["logmel"]["x"][:, 0, 0])) == {6, 7, 8}
    assert len(trial.y_val_song) == 3 and list(arrays["test"]["logmel"]["y_song"]) == [0, 1, 2]
    assert set(np.unique(trial.x_train[:, 0, 0])) == {0, 1, 2} and list(trial.y_train_song) == [0, 1, 2]
    assert np.array_equal(trial.x_train[:, 0, 0], trial.train_song)  # song index of every training clip
    assert arrays["clips"] == {"train": 6, "val": 6, "test": 6}
