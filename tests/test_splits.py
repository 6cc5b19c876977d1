"""Splits are made on songs, stratified by genre, seeded; no song is in two splits."""

from __future__ import annotations

import pandas as pd
import pytest

from genre_ray.data.splits import split_id, split_report, split_songs


def _songs(per_class: dict[str, int]) -> pd.DataFrame:
    rows = [{"song_id": f"{g}/{g}.{i:05d}", "label": g} for g, n in per_class.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_every_song_in_exactly_one_split_and_classes_stratified() -> None:
    songs = _songs({"rock": 20, "jazz": 20, "pop": 10})
    split = split_songs(songs, 0.15, 0.2, seed=0)
    assert set(split) == {"train", "val", "test"} and len(split) == len(songs)
    table = split_report(songs, split)
    assert table.loc["rock", "test"] == 4 and table.loc["pop", "test"] == 2
    assert table.loc["rock", "val"] == 3
    assert table.loc["total"].sum() == 50


def test_seeded_and_independent_of_row_order() -> None:
    songs = _songs({"a": 12, "b": 12})
    one = split_songs(songs, 0.2, 0.2, seed=3)
    shuffled = songs.sample(frac=1.0, random_state=1)
    two = split_songs(shuffled, 0.2, 0.2, seed=3).loc[songs.index]
    assert one.equals(two)
    assert not one.equals(split_songs(songs, 0.2, 0.2, seed=4))
    assert split_id(songs["song_id"], one) == split_id(shuffled["song_id"], two.loc[shuffled.index])


def test_tiny_classes_still_get_a_song_in_each_split() -> None:
    songs = _songs({c: 3 for c in "abcdefghij"})  # the shape of a 30-clip GTZAN sample
    table = split_report(songs, split_songs(songs, 0.15, 0.2, seed=0))
    assert (table.drop("total")[["train", "val", "test"]] == 1).all().all()


def test_duplicate_song_ids_are_refused() -> None:
    songs = pd.DataFrame({"song_id": ["x", "x"], "label": ["a", "a"]})
    with pytest.raises(ValueError, match="appears twice"):
        split_songs(songs, 0.2, 0.2, seed=0)


def _with_artists(per_class: dict[str, int], songs_per_artist: int) -> pd.DataFrame:
    songs = _songs(per_class)
    songs["artist"] = [f"{label}-artist-{i // songs_per_artist}" for label, i in
                       zip(songs["label"], songs.groupby("label").cumcount(), strict=True)]
    return songs


def test_no_artist_in_two_splits_and_classes_still_everywhere() -> None:
    from genre_ray.data.splits import assign_splits

    songs = _with_artists({"rock": 30, "jazz": 30, "pop": 30}, songs_per_artist=3)
    split, how = assign_splits(songs, 0.15, 0.2, seed=0)
    assert how == "by artist"
    assert (songs.assign(split=split).groupby("artist")["split"].nunique() == 1).all()
    table = split_report(songs, split)
    assert (table.drop("total")[["train", "val", "test"]] > 0).all().all()
    assert 0.1 < (split == "test").mean() < 0.3


def test_unknown_artists_are_their_own_groups() -> None:
    from genre_ray.data.splits import grouped_split

    songs = _with_artists({"a": 12, "b": 12}, songs_per_artist=4)
    songs.loc[songs.index[::2], "artist"] = None
    split = grouped_split(songs, 0.2, 0.2, seed=1)
    known = songs.assign(split=split).dropna(subset=["artist"])
    assert (known.groupby("artist")["split"].nunique() == 1).all()


def test_predefined_split_is_honoured_and_checked() -> None:
    from genre_ray.data.splits import SplitError, assign_splits

    songs = _songs({"a": 4, "b": 4})
    songs["split"] = ["training", "validation", "test", "train"] * 2
    split, how = assign_splits(songs, 0.2, 0.2, seed=0)
    assert how == "predefined" and list(split[:4]) == ["train", "val", "test", "train"]
    songs.loc[0, "split"] = "holdout"
    with pytest.raises(SplitError, match="'holdout'"):
        assign_splits(songs, 0.2, 0.2, seed=0)


def test_split_folds_auto_cross_validates_small_collections_only() -> None:
    from genre_ray.config import ConfigError, parse_config
    from genre_ray.data.splits import AUTO_FOLDS, AUTO_FOLDS_BELOW, auto_folds

    assert parse_config({}, "x.yaml").split["folds"] == "auto"  # the default
    assert auto_folds("auto", AUTO_FOLDS_BELOW - 1) == AUTO_FOLDS
    assert auto_folds("auto", AUTO_FOLDS_BELOW) is None  # a big collection: one validation split
    assert auto_folds(None, 10) is None and auto_folds(3, 10_000) == 3  # an explicit choice is kept
    with pytest.raises(ConfigError, match=r"split\.folds: must be auto, null"):
        parse_config({"split": {"folds": "many"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"split\.folds"):
        parse_config({"split": {"folds": 1}}, "x.yaml")


def test_a_small_collection_is_split_into_folds_by_default() -> None:
    from genre_ray.config import parse_config
    from genre_ray.data.tasks import TaskSpec
    from genre_ray.search.runner import split_songs

    songs = pd.DataFrame({"song_id": [f"s{i}" for i in range(60)], "label": [f"g{i % 4}" for i in range(60)],
                          "artist": [None] * 60, "path": [f"/m/{i}.wav" for i in range(60)]})
    cfg = parse_config({}, "x.yaml")
    out, _, how = split_songs(cfg, TaskSpec.from_config(cfg.tasks[0]), songs)
    dev = out[out["split"] != "test"]
    assert (dev["split"] == "train").all() and sorted(dev["fold"].unique()) == [0, 1, 2, 3, 4]
    assert "5-fold cross-validation (split.folds auto" in how
    cfg = parse_config({"split": {"folds": None}}, "x.yaml")
    out, _, how = split_songs(cfg, TaskSpec.from_config(cfg.tasks[0]), songs)
    assert "fold" not in out and set(out["split"]) == {"train", "val", "test"}
