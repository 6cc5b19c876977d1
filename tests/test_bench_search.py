"""``python -m genre_ray.bench search``: the curve arithmetic, the budget stopper, one tiny run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from genre_ray.bench import SUBCOMMANDS
from genre_ray.bench.search import (
    BudgetCounter,
    Curve,
    Report,
    RunResult,
    best_so_far,
    budget_stopper,
    epochs_to_reach,
    median_curve,
    median_row,
    order_reports,
    seed_rows,
)


def _reports(values: list[float], trial: str = "t") -> list[Report]:
    return [Report(trial, i + 1, v, float(i)) for i, v in enumerate(values)]


def test_reports_are_ordered_by_the_time_the_driver_got_them() -> None:
    got = [Report("a", 1, 0.1, 2.0), Report("b", 1, 0.2, 0.5), Report("a", 2, 0.3, 1.0),
           Report("b", 2, 0.4, 1.0)]
    ordered = order_reports(got)
    assert [(r.trial_id, r.epoch) for r in ordered] == [("b", 1), ("a", 2), ("b", 2), ("a", 1)]
    # The curve follows that order, not the order of the list.
    assert best_so_far(got, "max").y == [0.2, 0.3, 0.4, 0.4]


def test_best_so_far_for_a_metric_to_maximise() -> None:
    curve = best_so_far(_reports([0.5, 0.4, 0.7, 0.6, 0.9]), "max")
    assert curve.x == [1, 2, 3, 4, 5]
    assert curve.y == [0.5, 0.5, 0.7, 0.7, 0.9]
    assert curve.final == 0.9


def test_best_so_far_for_a_metric_to_minimise_and_nan_never_wins() -> None:
    curve = best_so_far(_reports([math.nan, 1.2, 1.5, math.nan, 0.8, 0.9]), "min")
    assert curve.x == [1, 2, 3, 4, 5, 6]
    assert math.isnan(curve.y[0])
    assert curve.y[1:] == [1.2, 1.2, 1.2, 0.8, 0.8]
    with pytest.raises(ValueError, match="max or min"):
        best_so_far(_reports([1.0]), "up")


def test_epochs_to_reach_first_crossing_ties_count_and_never_reached() -> None:
    up = Curve([1, 2, 3, 4], [0.5, 0.7, 0.7, 0.9])
    assert epochs_to_reach(up, 0.7, "max") == 2  # reaching it equals it
    assert epochs_to_reach(up, 0.8, "max") == 4
    assert epochs_to_reach(up, 0.95, "max") is None
    assert epochs_to_reach(up, 0.8, "max", budget=3) is None  # reached, but past the budget
    down = Curve([1, 2, 3], [math.nan, 0.6, 0.3])
    assert epochs_to_reach(down, 0.6, "min") == 2
    assert epochs_to_reach(down, 0.2, "min") is None


def test_median_curve_over_runs_of_different_lengths() -> None:
    a, b, c = Curve([1, 2, 3], [1.0, 2.0, 3.0]), Curve([1, 2], [3.0, 4.0]), Curve([1], [0.0])
    med = median_curve([a, b, c], 4)
    assert med.x == [1, 2, 3]  # no run got to 4
    assert med.y == [1.0, 3.0, 3.0]


def test_budget_counter_counts_each_epoch_once_and_stops_at_the_budget() -> None:
    counter = BudgetCounter("val_loss", budget=4)
    assert counter.add("a", {"training_iteration": 1, "val_loss": 2.0, "planned_epochs": 3})
    assert counter.add("b", {"training_iteration": 1, "val_loss": 1.5, "planned_epochs": 3})
    assert counter.add("a", {"training_iteration": 2, "val_loss": 1.0})
    assert not counter.add("a", {"training_iteration": 2, "val_loss": 1.0, "done": True})  # a repeat
    assert not counter.add("a", {"val_loss": 1.0})  # no epoch: nothing ran
    assert counter.used == 3 and not counter.exhausted and not counter.cut
    assert counter.add("b", {"training_iteration": 2, "val_loss": 0.9})
    assert counter.used == 4 and counter.exhausted and counter.cut == {"b"}
    # An epoch already in flight when the budget ran out still counts: the compute was spent.
    assert counter.add("a", {"training_iteration": 3, "val_loss": 0.8})
    assert counter.used == 5 and counter.cut == {"a", "b"}
    assert counter.epochs_of() == {"a": 3, "b": 2}
    assert [r.value for r in counter.reports] == [2.0, 1.5, 1.0, 0.9, 0.8]
    assert counter.planned == {"a": 3, "b": 3}


def test_budget_counter_without_budget_never_stops() -> None:
    counter = BudgetCounter("val_song_acc")
    for i in range(1, 50):
        counter.add("t", {"training_iteration": i, "val_song_acc": 0.5})
    assert counter.used == 49 and not counter.exhausted


def test_budget_stopper_feeds_the_counter_and_stops_all_at_the_budget() -> None:
    from ray import tune

    counter = BudgetCounter("val_song_acc", budget=2)
    stopper = budget_stopper(counter)
    assert isinstance(stopper, tune.Stopper)
    assert stopper("a", {"training_iteration": 1, "val_song_acc": 0.4}) is False
    assert not stopper.stop_all()
    assert stopper("b", {"training_iteration": 1, "val_song_acc": 0.6}) is False
    assert stopper.stop_all()
    assert counter.used == 2


def _run(method: str, values: list[float], seed: int = 0, mode: str = "max") -> RunResult:
    reports = [Report(f"t{i // 2}", i % 2 + 1, v, float(i)) for i, v in enumerate(values)]
    return RunResult(method, seed, reports, {f"t{i}": 2 for i in range(len(values))}, set(), 0.0, mode)


def test_seed_rows_ratio_against_randoms_best_and_the_median() -> None:
    runs = [_run("random", [0.1, 0.2, 0.3, 0.5, 0.4, 0.6, 0.2, 0.3, 0.3, 0.4], seed=0),  # best 0.6 of 10
            _run("asha_tpe", [0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], seed=0),  # 0.6 at 2
            _run("random", [0.5] * 10, seed=1),
            _run("asha_tpe", [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.1, 0.1, 0.1, 0.1], seed=1),  # 0.5 at 6
            _run("random", [0.5] * 10, seed=2),
            _run("asha_tpe", [0.4] * 10, seed=2)]  # never
    rows = seed_rows(runs)
    assert [(r["seed"], r["budget"], r["epochs_to_reach"], r["ratio"], r["met"]) for r in rows] == [
        (0, 10, 2, "0.20", "yes"), (1, 10, 6, "0.60", "no"), (2, 10, "not reached", "not reached", "no")]
    med = median_row(rows)
    assert med["ratio"] == "0.60" and med["met"].startswith("no (1 of 3")
    assert median_row(rows[:1])["met"].startswith("yes")


def test_stops_are_told_apart_from_budget_cuts() -> None:
    reports = [Report("a", 1, 0.1, 0.0), Report("b", 1, 0.2, 1.0), Report("b", 2, 0.3, 2.0),
               Report("c", 1, 0.3, 3.0)]
    run = RunResult("asha_tpe", 0, reports, {"a": 2, "b": 2, "c": 2}, {"c", "b"}, 0.0, "max")
    assert run.trials == 3 and run.trial_epochs == 4
    assert run.stopped_early == 1  # a: ASHA
    assert run.cut == 1  # c: the budget; b had run all its epochs


def test_search_is_a_registered_subcommand() -> None:
    assert SUBCOMMANDS.get("search") == "genre_ray.bench.search"


@pytest.mark.slow
def test_smoke_run_writes_table_csv_and_plot_with_equal_budgets(tiny_demo: Path, tmp_path: Path,
                                                                ray_session: object,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from genre_ray.bench.__main__ import main

    monkeypatch.setitem(SUBCOMMANDS, "search", "genre_ray.bench.search")
    assert main(["search", "--smoke", "--data", str(tiny_demo), "--results-dir", str(tmp_path)]) == 0
    md, table, png = (tmp_path / f"bench_search.{ext}" for ext in ("md", "csv", "png"))
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["random search", "ASHA + TPE"]
    random, asha = rows
    assert int(random["trials"]) == 2 and random["trial_epochs"] == "4"  # 2 trials of 2 epochs
    assert random["budget"] == asha["budget"] == "4"
    assert int(asha["trial_epochs"]) >= 4  # ran until the budget was spent (an epoch in flight may add one)
    assert asha["ratio"] and asha["target_met"] in ("yes", "no")
    text = md.read_text()
    assert "random search" in text and "ASHA + TPE" in text and "--smoke" in text and "## Target" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
