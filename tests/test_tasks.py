"""Genre tasks: all classes, subsets, merges, one-versus-rest, and dropping small classes."""

from __future__ import annotations

import pandas as pd
import pytest

from genre_ray.data.tasks import TaskError, TaskSpec, apply_task


def _manifest(counts: dict[str, int]) -> pd.DataFrame:
    rows = [{"song_id": f"{g}-{i}", "label": g} for g, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_all_classes_merge_spelling_variants() -> None:
    songs, report = apply_task(_manifest({"Hip-Hop": 3, " hip-hop": 2, "Rock": 4}), TaskSpec("all"))
    assert sorted(songs["label"].unique()) == ["Hip-Hop", "Rock"]
    assert (songs["label"] == "Hip-Hop").sum() == 5
    assert set(report["status"]) == {"kept"}


def test_subset_and_merge() -> None:
    m = _manifest({"rock": 4, "prog rock": 3, "Classic  Rock": 3, "jazz": 5, "pop": 6})
    songs, _ = apply_task(m, TaskSpec("merged", merge={"rock": ("rock", "prog rock", "classic rock")},
                                      classes=("jazz",)))
    assert songs["label"].value_counts().to_dict() == {"rock": 10, "jazz": 5}
    assert "pop" not in set(songs["raw_label"])


def test_one_versus_rest() -> None:
    songs, _ = apply_task(_manifest({"Prog Rock": 4, "jazz": 3, "pop": 3}), TaskSpec("prog", positive="prog rock"))
    assert songs["label"].value_counts().to_dict() == {"the world": 6, "prog rock": 4}


def test_small_classes_dropped_and_reported() -> None:
    songs, report = apply_task(_manifest({"a": 5, "b": 5, "c": 2}), TaskSpec("t", min_songs=3))
    assert set(songs["label"]) == {"a", "b"}
    assert report.set_index("class").loc["c", "status"].startswith("dropped")


def test_nothing_left_to_learn_fails_clearly() -> None:
    with pytest.raises(TaskError, match=r"fewer than two classes with at least 3 songs remain \(a: 5, b: 1\); "
                                        "lower tasks.min_songs"):  # the counts as numbers, not np.int64(5)
        apply_task(_manifest({"a": 5, "b": 1}), TaskSpec("t", min_songs=3))
