"""``python -m genre_ray.bench overhead``: the timing arithmetic, and one quick run's report.

No timing thresholds here: timings belong in results/bench_overhead.md, not in a test.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from genre_ray.bench.__main__ import build_parser, main
from genre_ray.bench.overhead import (
    Pair,
    TuneRun,
    dataset_bytes,
    fixed_config,
    overhead,
    overhead_rows,
    overrides_for,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_subcommand_is_registered() -> None:
    args = build_parser().parse_args(["overhead", "--quick", "--trial-seconds", "20"])
    assert args.quick and args.trial_seconds == 20 and args.repeats == 4 and args.epochs is None


def test_one_at_a_time_trials_are_timed_between_completions() -> None:
    # Trials of 2 s after a first one; the driver got trials b and c in one go (c's gap is 0).
    run = TuneRun("t", 1, 1.0, {"a": 12.0, "b": 16.0, "c": 16.0}, wall_s=16.5,
                  in_trial={"a": 3.0, "b": 1.8, "c": 1.9})
    assert run.trial_s == pytest.approx(2.0)  # the mean gap, not the median (0 here)
    assert run.startup_s == pytest.approx(9.0)  # until a's end (12 s) less a's own 3 s
    assert run.teardown_s == pytest.approx(0.5)
    assert run.steady == ["b", "c"] and run.in_trial_s == pytest.approx(1.85)  # not the cold first trial
    assert run.per_min == pytest.approx(60 * 3 / 16.5)
    assert run.steady_per_min == pytest.approx(60 * 2 / 4.0)


def test_throughput_of_two_at_a_time_counts_after_the_first_round() -> None:
    run = TuneRun("t", 2, 1.0, {"a": 10.0, "b": 10.5, "c": 13.0, "d": 13.5, "e": 16.0}, 16.2, {})
    assert run.steady_per_min == pytest.approx(60 * 3 / (16.0 - 10.5))
    assert math.isnan(TuneRun("t", 2, 1.0, {"a": 1.0, "b": 2.0}, 3.0, {}).steady_per_min)


def _fit(trial_s: float) -> TuneRun:
    """A fit of 2 trials one after the other, the second ``trial_s`` after the first."""
    return TuneRun("t", 1, 1.0, {"a": 30.0, "b": 30.0 + trial_s}, 30.0 + trial_s,
                   {"a": 25.0, "b": trial_s - 0.2})


def test_each_fit_is_compared_with_the_bare_runs_on_either_side_of_it() -> None:
    pair = Pair("tune", _fit(22.0), before=19.0, after=21.0)
    assert pair.bare_s == 20.0 and pair.overhead == pytest.approx(0.10)
    # A slow spell: the machine is twice as slow for the third pair's bare runs and fit alike.
    # Against each fit's own neighbours that is no overhead; against the median bare run it would be.
    res = {"bare": [20.0, 20.0, 20.0, 40.0, 40.0],
           "pairs": [Pair("tune", _fit(20.4), 20.0, 20.0), Pair("mlflow", _fit(20.6), 20.0, 20.0),
                     Pair("tune", _fit(40.8), 40.0, 40.0), Pair("mlflow", _fit(40.0), 40.0, 40.0)]}
    assert overhead(res, "tune") == pytest.approx(0.02)  # the median of +2 % and +2 %
    assert overhead(res, "mlflow") == pytest.approx(0.015)  # of +3 % and 0 %
    rows = overhead_rows(res)
    assert [r["method"] for r in rows] == ["bare (run_trial in-process)", "Tune, no tracking",
                                           "Tune + MLflow child runs"]
    assert rows[1]["pairs"] == "+2.0 %, +2.0 %" and rows[1]["met"] == "yes"
    assert rows[1]["outside_s"] == pytest.approx(0.2)  # each fit's second trial: 0.2 s outside the trainable
    assert rows[1]["medians"] == "+2.0 %"  # (median 30.6 s - median bare 30 s) / 30 s


def test_dataset_bytes_counts_every_fold_and_kind() -> None:
    from genre_ray.training.wrappers import TrialData

    x = np.zeros((4, 8, 10), np.float32)
    y = np.zeros(4, np.int64)
    d = TrialData(x, y, x, y, y, y, ["a"], mean=np.zeros((8, 1), np.float32), std=np.ones((8, 1), np.float32))
    one = 2 * x.nbytes + 4 * y.nbytes + 2 * 8 * 4
    assert dataset_bytes({"logmel": d}) == one
    assert dataset_bytes({"logmel": [d, d], "mfcc": d}) == 3 * one


def test_the_fixed_trial_has_no_searched_value() -> None:
    from genre_ray.config import load_config

    args = build_parser().parse_args(["overhead"])
    cfg = load_config(ROOT / "search_spaces" / "cnn.yaml", overrides_for(args))
    config = fixed_config(cfg)
    assert config["model.name"] == "cnn2d" and config["model.depth"] == 3 and config["train.lr"] == 1e-3
    with pytest.raises(ValueError, match="needs every value fixed"):
        fixed_config(load_config(ROOT / "search_spaces" / "cnn.yaml"))


@pytest.mark.slow
def test_quick_run_writes_every_table(tiny_demo: Path, tmp_path: Path, ray_session: object) -> None:
    assert main(["overhead", "--quick", "--data", str(tiny_demo), "--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "bench_overhead.md").read_text()
    for heading in ("## Per-trial overhead", "## Pairs", "## Start-up, apart", "## Throughput", "## Memory",
                    "## Method"):
        assert heading in md
    for column in ("overhead: median of the pairs", "each pair's overhead", "bare run before, s",
                   "outside it, s",
                   "start-up s", "trials/min (steady)", "object store peak, MB",
                   "peak RSS per trial process, MB"):
        assert column in md
    assert "bare (run_trial in-process)" in md and "Tune + MLflow child runs" in md
    assert "load average" in md and "--quick" in md
    with (tmp_path / "bench_overhead.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["bare", "tune", "tune+mlflow", "tune round 1",
                                           "tune+mlflow round 1", "throughput_c1", "throughput_c2"]
    for row in rows:
        for key, value in row.items():
            if key not in ("section", "method") and value != "":
                assert math.isfinite(float(value)), (row["method"], key, value)
    assert float(rows[0]["median_trial_s"]) > 0 and float(rows[5]["rss_peak_mb"]) >= 0
    assert float(rows[3]["bare_near_s"]) > 0 and rows[3]["overhead_pct"] != ""
    # Every earlier fit's trial data was freed (trial_data): nothing of it is in the store before a fit.
    assert all(float(r["store_before_mb"]) < 0.5 * float(r["dataset_mb"]) for r in rows[5:])
