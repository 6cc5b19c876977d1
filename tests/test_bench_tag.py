"""``python -m genre_ray.bench tag``: a tiny run writes both methods, the ratio and the scaling.

No timing thresholds here: timings belong in results/bench_tag.md, not in a test.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genre_ray.bench.__main__ import build_parser, main
from genre_ray.bench.tag import Method


def test_the_subcommand_is_registered() -> None:
    args = build_parser().parse_args(["tag", "--smoke", "--workers", "1,2"])
    assert args.smoke and args.workers == "1,2" and args.repeats == 3


def test_steady_rate_is_measured_in_the_actors_from_the_first_call_to_the_last() -> None:
    from genre_ray.bench.tag import call_rates

    # 160 rows; the run started at 100.0, the first call at 105.0, the last call ended at 107.0
    calls = [(105.5, 106.0, 32), (105.0, 106.5, 64), (106.0, 107.0, 64)]
    assert call_rates(calls, 100.0) == (pytest.approx(80.0), 5.0)
    assert all(np.isnan(x) for x in call_rates([], 100.0))  # no call: no rate
    m = Method("tag", 160, runs=[6.0, 7.0, 8.0], steady_runs=[150.0, 160.0, 170.0], startup_runs=[1, 2, 9])
    assert m.songs_per_s == pytest.approx(160 / 7.0) and m.steady == 160.0 and m.startup_s == 2
    assert Method("loop", 100, runs=[5.0]).steady == pytest.approx(20.0)


def test_tags_own_summary_measures_the_steady_rate_as_the_rows_arrive() -> None:
    from genre_ray.serving.tag import TagSummary

    # rows came back at 5.5 s (32), 6.5 s (64) and 7.5 s (64): 128 rows in the 2 s after the first
    s = TagSummary(Path("x"), 160, 0, predicted=160, workers=2, arrivals=[(5.5, 32), (6.5, 64), (7.5, 64)])
    assert s.first_rows_s == 5.5 and s.steady_songs_per_s == pytest.approx(64.0)
    assert np.isnan(TagSummary(Path("x"), 32, 0, predicted=32, arrivals=[(5.5, 32)]).steady_songs_per_s)
    assert np.isnan(TagSummary(Path("x"), 0, 0).steady_songs_per_s)  # nothing predicted: no rate


def test_the_timed_actors_are_tags_own_predictor_for_the_run_only(ray_session: Any) -> None:
    from genre_ray.bench._timed_tag import TimedPredictor, timed_calls
    from genre_ray.serving import tag

    original = tag.Predictor
    with timed_calls() as calls:
        assert tag.Predictor is TimedPredictor and issubclass(TimedPredictor, original)
    assert tag.Predictor is original and calls == []  # restored; no call was made


def test_the_paired_ratio_is_the_median_of_runs_done_back_to_back() -> None:
    from genre_ray.bench.tag import _targets, paired_ratios

    loop = Method("loop", 100, runs=[100.0, 60.0, 90.0])  # the machine was quick during the second pair
    tag2 = Method("tag, 2 workers", 100, runs=[50.0, 30.0, 60.0])
    tag1 = Method("tag, 1 worker", 100, runs=[100.0, 100.0, 100.0])
    assert paired_ratios(loop, tag2) == pytest.approx([2.0, 2.0, 1.5])
    rows = {r["ratio"].split(" (")[0]: r for r in _targets(loop, {1: tag1, 2: tag2}, ray_s=1.0)}
    paired = rows["tag, 2 workers / loop, whole run, median of the pairs run back to back"]
    assert paired["value"] == "2.00x" and paired["met"] == "yes"
    assert rows["tag, 2 workers / loop, whole run"]["value"] == "1.80x"  # 90 s over 50 s: medians


def test_a_run_slowed_by_the_host_is_done_again_and_the_last_try_is_kept(monkeypatch: pytest.MonkeyPatch
                                                                           ) -> None:
    from genre_ray.bench import tag as bench_tag
    from genre_ray.bench.tag import Run, _timed

    monkeypatch.setattr(bench_tag, "_quiet", lambda max_load: None)

    def runs(*steals: float) -> Any:
        it = iter(steals)
        return lambda: Run(seconds=10.0, steady=5.0, startup=1.0, load=0.1, steal=next(it))

    m = Method("loop", 10)
    _timed(m, runs(0.12, 0.05, 0.001), None, 0.02)  # two noisy tries dropped, the quiet one kept
    assert m.steals == [0.001] and m.discarded == [0.12, 0.05] and m.runs == [10.0]
    _timed(m, runs(0.3, 0.3, 0.3), None, 0.02)  # never quiet: the third try is kept, and shown
    assert m.steals == [0.001, 0.3] and len(m.discarded) == 4
    _timed(m, runs(0.3), None, None)  # no limit: the first run is kept
    assert m.steals[-1] == 0.3 and len(m.runs) == 3
    _timed(m, runs(float("nan")), None, 0.02)  # no /proc/stat: NaN steal is not above the limit
    assert len(m.runs) == 4 and len(m.discarded) == 4


def test_the_steal_meter_reads_the_host_share_from_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    import genre_ray.bench as bench

    ticks = iter([(100, 1000), (130, 1300)])  # 30 of 300 ticks stolen during the block
    monkeypatch.setattr(bench, "_cpu_ticks", lambda: next(ticks))
    with bench.StealMeter() as meter:
        pass
    assert meter.fraction == pytest.approx(0.1)
    monkeypatch.setattr(bench, "_cpu_ticks", lambda: None)  # no /proc/stat (not Linux)
    with bench.StealMeter() as meter:
        pass
    assert np.isnan(meter.fraction)
    monkeypatch.undo()
    with bench.StealMeter() as meter:  # the real /proc/stat here: a share, or NaN off Linux
        sum(range(10**6))
    assert np.isnan(meter.fraction) or 0.0 <= meter.fraction <= 1.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained classifier saved as a pyfunc folder: throughput does not need a good model."""
    import torch

    from genre_ray import serving
    from genre_ray.features import FeatureSettings
    from genre_ray.models.cnn1d import CNN1D
    from genre_ray.training.wrappers import Standardized

    torch.manual_seed(0)
    settings = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, clip_overlap=0.0, n_mels=32)
    bins = settings.shape("logmel")[0]
    net = Standardized(CNN1D(3, settings.shape("logmel"), depth=1, width=8), np.zeros((bins, 1)),
                       np.full((bins, 1), 20.0), probabilities=True)
    classifier = serving.SongClassifier(net, ["a", "b", "c"], "logmel", settings)
    return serving.save_model(classifier, tmp_path_factory.mktemp("bench-model") / "model")


@pytest.mark.slow
def test_a_tiny_run_reports_both_methods_and_the_ratio(model_dir: Path, tmp_path: Path,
                                                        ray_session: Any) -> None:
    out = tmp_path / "bench_tag.md"
    assert main(["tag", "--smoke", "--model", str(model_dir), "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out)]) == 0
    text = out.read_text()
    for words in ("loop (pyfunc, one file at a time)", "tag, 1 worker", "tag, 2 workers",
                  "tag, 2 workers / loop, whole run", "tag, 2 workers / loop, steady",
                  "tag, 2 workers / tag, 1 worker, steady (scaling)", ">= 1.8x",
                  "12 MP3 files, 4 s, 44.1 kHz", "ms per file, 1 torch thread", "## Stages",
                  "**Ceiling.**", "2 x loop / one worker"):
        assert words in text, words
    with out.with_suffix(".csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["loop (pyfunc, one file at a time)", "tag, 1 worker",
                                           "tag, 2 workers"]
    assert list(rows[0]) == ["method", "songs", "seconds", "songs_per_s", "steady_songs_per_s", "startup_s",
                             "over_loop", "steady_over_loop", "runs", "runs_s", "steady_runs", "loads",
                             "steals", "discarded", "note"]
    assert all(float(r["songs_per_s"]) > 0 and float(r["steady_songs_per_s"]) > 0 and int(r["songs"]) == 12
               for r in rows)
    assert ray_session.is_initialized()  # the caller's Ray session is left running
    assert not list((tmp_path / "cache").glob("run-*"))  # scratch removed
