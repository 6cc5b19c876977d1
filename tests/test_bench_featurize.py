"""``python -m genre_ray.bench featurize``: its report, that its methods agree, and its start-up rows.

No timing thresholds here: timings belong in results/bench_featurize.md, not in a test.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest

from genre_ray.bench.__main__ import build_parser
from genre_ray.bench.featurize import (
    BenchResult,
    Startup,
    bench_settings,
    report,
    run_featurize_bench,
    time_startups,
)
from genre_ray.bench.memory import parse_sizes, run_memory_bench
from genre_ray.data.collection import folder_manifest
from genre_ray.data.demo import DemoSpec, ensure_demo_collection
from genre_ray.features.pipeline import featurize

# Small everything, so a test costs seconds; the methods still share every setting.
TINY = {"clip_seconds": 1.0, "n_fft": 512, "hop_length": 256, "n_mels": 32, "n_mfcc": 13}


@pytest.fixture(scope="module")
def ray_module():
    """One Ray session for this module (an already running one is reused and left running)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # Its own Ray ("local"): not a cluster another process's ``ray start`` left on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_collection(tmp_path_factory.mktemp("bench") / "songs",
                                  DemoSpec(genres=2, songs_per_genre=2, seconds=6.0))


@pytest.fixture(scope="module")
def bench(collection: Path, ray_module, tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchResult, Path]:
    """One run of the benchmark, shared by the tests below; returns it and its cache root."""
    cache = tmp_path_factory.mktemp("bench-cache")
    result = run_featurize_bench(collection, seq_songs=2, cpus=2, repeats=1, batch_files=2, cache_root=cache,
                                 settings=bench_settings(**TINY), keep_features=True)
    return result, cache


def test_help_explains_every_option() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["featurize", "--help"])
    for option in ("DIR", "--songs", "--seq-songs", "--out", "--cpus", "--repeats", "--batch-files",
                   "--cache-dir", "--memory-sizes", "--startup-runs", "--wait-load"):
        assert option in out.getvalue()


def test_report_has_three_methods_and_ratios(bench: tuple[BenchResult, Path], tmp_path: Path) -> None:
    result, cache = bench
    md, path_csv = report(result, tmp_path / "bench.md", "python -m genre_ray.bench featurize",
                          bench_settings(**TINY))
    assert md.exists() and path_csv == tmp_path / "bench.csv"
    rows = list(csv.DictReader(path_csv.open()))
    assert [r["method"] for r in rows] == ["pipeline", "pipeline, Ray Data", "sequential", "floor"]
    assert all(float(r["clips_per_s"]) > 0 and float(r["pipeline_over_this"]) > 0 for r in rows)
    assert int(rows[0]["clips"]) == int(rows[1]["clips"]) == int(rows[3]["clips"]) == 4 * 6  # 6 clips per song
    assert int(rows[2]["songs"]) == 2 and "extrapolated" in rows[2]["note"]
    assert "in this process" in rows[0]["note"] and "in_process=False" in rows[1]["note"]
    assert result.pipeline.info["in_process"] and not result.ray_data.info["in_process"]  # type: ignore[union-attr]
    text = md.read_text()
    for needle in ("pipeline / sequential", "pipeline / floor", "pipeline, Ray Data / floor", "ray.init",
                   "the pass in this process", "of which decode + features (featurize_batch)", "the Ray Data run",
                   "**cores**: 2", "**load**"):
        assert needle in text, needle
    assert "## Start-up" not in text  # the fixture's run has no start-up rows
    assert result.over_floor > 0 and result.over_sequential > 0
    assert not list(cache.iterdir())  # the cold caches are removed


def test_the_start_up_rows_and_their_targets(bench: tuple[BenchResult, Path], tmp_path: Path) -> None:
    result, _ = bench
    result.startup = [Startup("cold", "featurize", "pipeline", True, [3.0, 2.0, 9.0],
                              {"imports": 1.0, "ray": 0.0, "featurize": 1.0}, work=0.5),
                      Startup("cold", "ray.init, then featurize", "Ray Data", False, [14.0],
                              {"imports": 1.0, "ray": 4.0, "featurize": 9.0}, work=1.0)]
    try:
        md, _ = report(result, tmp_path / "bench.md", "python -m genre_ray.bench featurize", bench_settings(**TINY))
    finally:
        result.startup = []
    text = md.read_text()
    section = text.split("## Start-up: from the command to the features", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| cold")]
    assert len(table) == 2 and "| 3.00 |" in table[0] and "| 2.50 | yes |" in table[0]  # median 3.0 less 0.5
    assert "| Ray Data tasks | 14.00 |" in table[1] and "| 13.00 | no |" in table[1]
    assert "start-up beyond the work, cold Ray session, featurize (pipeline) | 2.50 s | <= 5 s | yes" in text


def test_a_start_up_is_timed_in_a_fresh_process(collection: Path, tmp_path: Path) -> None:
    manifest, _ = folder_manifest(collection)
    [row] = time_startups(manifest["path"].tolist(), bench_settings(**TINY), tmp_path, 2, (("cold", None, None),),
                          cpus=2, warm_up=False)
    assert row.in_process and len(row.runs) == 1 and row.method == "pipeline"
    assert row.phases["ray"] < 0.1 and 0 < row.phases["imports"] < row.seconds  # no Ray before its features
    assert sum(row.phases.values()) == pytest.approx(row.seconds, abs=0.01)
    assert not list(tmp_path.iterdir())  # its spec and cache are removed


def test_the_three_methods_compute_the_same_features(bench: tuple[BenchResult, Path]) -> None:
    result, _ = bench
    paths, pipe = result.features["pipeline"]
    floor_paths, floor = result.features["floor"]
    seq_paths, seq = result.features["sequential"]
    assert floor_paths == paths and len(seq_paths) == 2
    clips = {p: 6 for p in paths}  # every song gives 6 clips
    first = np.cumsum([0] + [clips[p] for p in paths])
    subset = np.concatenate([np.arange(first[paths.index(p)], first[paths.index(p)] + 6) for p in seq_paths])
    for kind in pipe:
        # The floor runs the pipeline's own code without Ray: identical values.
        np.testing.assert_array_equal(floor[kind], pipe[kind])
        # librosa pads clip edges with zeros where torch reflects, and computes in float64.
        assert seq[kind].shape == pipe[kind][subset].shape
    corr = {k: np.corrcoef(seq[k].ravel(), pipe[k][subset].ravel())[0, 1] for k in pipe}
    assert min(corr.values()) > 0.99, corr
    inner = slice(2, -2)  # away from the padded edges, log-mel agrees to a hundredth of a dB
    assert np.abs(seq["logmel"][..., inner] - pipe["logmel"][subset][..., inner]).max() < 0.01


def test_pipeline_cache_gives_back_the_same_features(collection: Path, ray_module, tmp_path: Path) -> None:
    s = bench_settings(**TINY)
    manifest, _ = folder_manifest(collection)
    first = featurize(manifest.iloc[:2][["path"]], s, tmp_path, batch_files=1)
    again = featurize(manifest.iloc[:2][["path"]], s, tmp_path, batch_files=1)
    assert not first.cache_hit and again.cache_hit
    assert {"hash_s", "compute_s", "load_s", "in_process"} <= set(first.info)
    for kind in s.kinds:
        assert again.features[kind].dtype == np.float32 and again.features[kind].flags.writeable
        np.testing.assert_array_equal(again.features[kind], first.features[kind])
    assert again.clips.equals(first.clips)


def test_memory_sizes_parse_and_zero_skips() -> None:
    assert parse_sizes("100,400") == [100, 400]
    assert parse_sizes("0") == parse_sizes("") == []


def test_report_has_peak_memory_at_two_sizes(bench: tuple[BenchResult, Path], collection: Path,
                                             tmp_path: Path) -> None:
    result, cache = bench
    settings = bench_settings(**TINY)
    rows = run_memory_bench(collection, [2, 4], settings, cache_root=cache, batch_files=2, cpus=2)
    assert [(r.songs, r.clips) for r in rows] == [(2, 12), (4, 24)]  # 6 one-second clips per song
    assert all(r.decoded_bytes > 0 and r.feature_bytes > 0 and r.worker_peak_bytes > 0 for r in rows)
    result.memory = rows
    md, _ = report(result, tmp_path / "bench.md", "python -m genre_ray.bench featurize", settings)
    section = md.read_text().split("## Peak memory", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == 2 and "worker peak RSS" in section and "VmHWM" in section
    assert not list(cache.iterdir())  # the cold caches are removed
