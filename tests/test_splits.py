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
                       zip(songs["label"], songs.groupby("label").cumcount())]
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
