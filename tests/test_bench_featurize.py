"""``python -m genre_ray.bench featurize``: its report, and that its three methods agree.

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
from genre_ray.bench.featurize import BenchResult, bench_settings, report, run_featurize_bench
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
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
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
                   "--cache-dir", "--memory-sizes", "--wait-load"):
        assert option in out.getvalue()


def test_report_has_three_methods_and_ratios(bench: tuple[BenchResult, Path], tmp_path: Path) -> None:
    result, cache = bench
    md, path_csv = report(result, tmp_path / "bench.md", "python -m genre_ray.bench featurize",
                          bench_settings(**TINY))
    assert md.exists() and path_csv == tmp_path / "bench.csv"
    rows = list(csv.DictReader(path_csv.open()))
    assert [r["method"] for r in rows] == ["pipeline", "sequential", "floor"]
    assert all(float(r["clips_per_s"]) > 0 and float(r["pipeline_over_this"]) > 0 for r in rows)
    assert int(rows[0]["clips"]) == int(rows[2]["clips"]) == 4 * 6  # 4 songs of 6 one-second clips
    assert int(rows[1]["songs"]) == 2 and "extrapolated" in rows[1]["note"]
    text = md.read_text()
    for needle in ("pipeline / sequential", "pipeline / floor", "cache write + read", "ray.init",
                   "**cores**: 2", "**load**"):
        assert needle in text
    assert result.over_floor > 0 and result.over_sequential > 0
    assert not list(cache.iterdir())  # the cold caches are removed


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
    assert {"hash_s", "compute_s", "load_s", "task_featurize_s", "task_write_s"} <= set(first.info)
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
