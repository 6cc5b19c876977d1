"""The Ray Data featurization and its Parquet cache: content-keyed, reused, atomic, bad files skipped.

A small collection is featurized in the calling process instead of Ray tasks; the tests that hold
a promise of the cache run both ways (``in_process`` True and False), and one checks that the two
write the same cache rows, bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from genre_ray.data.audio import cut_clips, decode
from genre_ray.data.collection import folder_manifest
from genre_ray.features import FeatureSettings, compute_features, pipeline

SETTINGS = FeatureSettings(kinds=("logmel", "mfcc"), clip_seconds=1.0, clip_overlap=0.5, n_mels=32)
BOTH_WAYS = pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "ray-data"])


@pytest.fixture()
def collection(tiny_demo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "music"
    shutil.copytree(tiny_demo, root)
    return root


def test_features_match_the_direct_computation_and_cover_every_clip(collection: Path, tmp_path: Path,
                                                                    ray_session: object) -> None:
    manifest, skipped = folder_manifest(collection)
    out = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4)
    assert skipped.empty and out.skipped.empty and not out.cache_hit
    assert out.features["logmel"].shape == (18 * 7, 32, SETTINGS.frames)  # 4 s -> 7 clips of 1 s, hop 0.5 s
    assert out.features["mfcc"].shape[1] == 20
    path = manifest["path"].iloc[4]
    sha = pipeline.content_hashes([path])[0]
    rows = np.flatnonzero(out.clips["sha"].to_numpy() == sha)
    assert list(out.clips.loc[rows, "clip"]) == list(range(7))
    direct = compute_features(cut_clips(decode(path, 22050), SETTINGS.clip_samples, 0.5), SETTINGS)
    assert np.allclose(out.features["logmel"][rows], direct["logmel"], atol=1e-4)


def test_second_run_reads_the_cache_without_featurizing(collection: Path, tmp_path: Path, ray_session: object,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    manifest, _ = folder_manifest(collection)
    first = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4)

    def no_compute(*args: object, **kwargs: object) -> None:
        raise AssertionError("featurized again")

    monkeypatch.setattr(pipeline, "_compute", no_compute)
    caplog.set_level("INFO", logger="genre_ray.features.pipeline")
    again = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache")
    assert again.cache_hit and again.cache_path == first.cache_path
    assert f"feature cache hit (logmel): {first.cache_path}" in caplog.text
    assert np.array_equal(again.features["logmel"], first.features["logmel"])
    renamed = manifest.assign(path=manifest["path"].str.replace(".wav", ".wav", regex=False))
    moved = tmp_path / "moved"
    shutil.copytree(collection, moved)
    renamed, _ = folder_manifest(moved)
    assert pipeline.featurize(renamed, SETTINGS, tmp_path / "cache").cache_hit  # same content, other names


def test_key_follows_content_and_every_setting(collection: Path) -> None:
    manifest, _ = folder_manifest(collection)
    hashes = pipeline.content_hashes(manifest["path"].tolist())
    key = pipeline.cache_key(hashes, SETTINGS)
    assert pipeline.cache_key(list(reversed(hashes)), SETTINGS) == key
    for change in ({"n_mels": 40}, {"clip_overlap": 0.0}, {"sample_rate": 16000}, {"hop_length": 256}):
        other = FeatureSettings(**{**SETTINGS.__dict__, **change})
        assert pipeline.cache_key(hashes, other) != key, change
    target = Path(manifest["path"].iloc[0])
    data, sr = sf.read(target)
    sf.write(target, data * 0.5, sr)  # same name, other audio
    assert pipeline.cache_key(pipeline.content_hashes(manifest["path"].tolist()), SETTINGS) != key


@BOTH_WAYS
def test_interrupted_write_leaves_no_trusted_cache(collection: Path, tmp_path: Path, ray_session: object,
                                                   monkeypatch: pytest.MonkeyPatch, in_process: bool) -> None:
    manifest, _ = folder_manifest(collection)
    cache = tmp_path / "cache"

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.featurize(manifest, SETTINGS, cache, batch_files=4, in_process=in_process)
    monkeypatch.undo()
    assert [p.name for p in cache.iterdir()] == []  # the temporary folder is gone, nothing was published
    # A folder left by a killed process (no completion marker) is never trusted.
    key = pipeline.cache_key(pipeline.content_hashes(manifest["path"].tolist()), SETTINGS)
    (cache / key).mkdir()
    (cache / key / "part-0.parquet").write_bytes(b"PAR1 truncated")
    out = pipeline.featurize(manifest, SETTINGS, cache, batch_files=4, in_process=in_process)
    assert not out.cache_hit and len(out.clips) == 18 * 7


def _bad_files(collection: Path) -> dict[str, Path]:
    """A silent, a NaN and a truncated WAV in the first genre, and a text file beside them."""
    genre = sorted(p for p in collection.iterdir() if p.is_dir())[0]
    silent = genre / "silent.wav"
    sf.write(silent, np.zeros(22050 * 2, np.float32), 22050)
    nan = genre / "nan.wav"
    sf.write(nan, np.full(22050 * 2, np.nan, np.float32), 22050, subtype="FLOAT")
    truncated = genre / "truncated.wav"
    truncated.write_bytes(next(genre.glob("*.00000.wav")).read_bytes()[:2000])
    (genre / "notes.txt").write_text("not audio, ignored")
    return {"silent": silent, "nan": nan, "truncated": truncated}


@BOTH_WAYS
def test_bad_files_are_skipped_and_reported_with_their_path(collection: Path, tmp_path: Path,
                                                            ray_session: object, in_process: bool) -> None:
    bad = _bad_files(collection)
    silent, nan, truncated = bad["silent"], bad["nan"], bad["truncated"]
    manifest, scan_skipped = folder_manifest(collection)
    out = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4, in_process=in_process)
    reasons = dict(zip(out.skipped["path"], out.skipped["reason"], strict=True))
    assert reasons.get(str(silent)) == "silent" and reasons.get(str(nan)) == "nan"
    assert str(truncated) in set(reasons) | set(scan_skipped["path"])
    assert len(out.clips) >= 18 * 7  # every good song is still there


def test_each_feature_variant_is_cached_once(collection: Path, tmp_path: Path, ray_session: object) -> None:
    """Adding a variant computes only that variant; the others are read, bit for bit."""
    manifest, _ = folder_manifest(collection)
    cache = tmp_path / "cache"
    one = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, n_mels=32)
    first = pipeline.featurize(manifest, one, cache, batch_files=4)
    assert first.info["computed"] == ["logmel"]
    both = FeatureSettings(kinds=("logmel", "chroma", "stats"), clip_seconds=1.0, n_mels=32)
    second = pipeline.featurize(manifest, both, cache, batch_files=4)
    assert second.info["computed"] == ["chroma", "stats"] and not second.cache_hit
    assert np.array_equal(second.features["logmel"], first.features["logmel"])
    assert second.features["stats"].shape == (len(second.clips), 20 + 210)
    again = pipeline.featurize(manifest, replace(both, kinds=("stats", "chroma", "logmel")), cache)
    assert again.cache_hit and again.info["computed"] == []
    assert np.array_equal(again.features["chroma"], second.features["chroma"])
    # A pass folder that disappeared leaves entries pointing nowhere: they are never trusted.
    shutil.rmtree(Path(second.cache_path.split(", ")[-1]))
    healed = pipeline.featurize(manifest, both, cache, batch_files=4)
    assert healed.info["computed"] == ["chroma", "stats"]
    assert np.allclose(healed.features["stats"], second.features["stats"])


def _cache_rows(table: pipeline.FeatureTable) -> object:
    """Every row the pass wrote to the cache, in (sha, clip) order: what a later run reads."""
    rows = pq.read_table(table.cache_path)
    return rows.sort_by([("sha", "ascending"), ("clip", "ascending")])


def test_in_process_and_ray_data_write_the_same_cache_rows(collection: Path, tmp_path: Path,
                                                          ray_session: object) -> None:
    _bad_files(collection)
    manifest, _ = folder_manifest(collection)
    kinds = replace(SETTINGS, kinds=("logmel", "mfcc", "chroma", "stats", "gtzan57", "waveform"))
    here = pipeline.featurize(manifest, kinds, tmp_path / "here", batch_files=4, in_process=True)
    tasks = pipeline.featurize(manifest, kinds, tmp_path / "ray", batch_files=4, in_process=False)
    assert here.info["in_process"] and not tasks.info["in_process"] and tasks.info["tasks"] > 1
    a, b = _cache_rows(here), _cache_rows(tasks)
    assert a.schema.equals(b.schema, check_metadata=True) and a.num_rows == b.num_rows > 18 * 7
    assert a.equals(b)  # every value, the error rows of the bad files included
    assert here.info["cache_key"] == tasks.info["cache_key"]
    for kind in kinds.kinds:
        np.testing.assert_array_equal(here.features[kind], tasks.features[kind])
    assert here.clips.equals(tasks.clips) and here.skipped.equals(tasks.skipped) and len(here.skipped) >= 2
    # One cache, either way: what one wrote, the other reads.
    assert pipeline.featurize(manifest, kinds, tmp_path / "here", in_process=False).cache_hit
    assert pipeline.featurize(manifest, kinds, tmp_path / "ray", in_process=True).cache_hit


def test_small_collections_are_featurized_in_process_and_large_ones_with_ray_data(
        collection: Path, tmp_path: Path, ray_session: object, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, _ = folder_manifest(collection)
    small = pipeline.featurize(manifest, SETTINGS, tmp_path / "a", batch_files=4)
    assert small.info["in_process"] and small.info["batches"] == 5  # 18 files, 4 per batch
    monkeypatch.setattr(pipeline, "IN_PROCESS_MAX_FILES", 17)
    large = pipeline.featurize(manifest, SETTINGS, tmp_path / "b", batch_files=4)
    assert not large.info["in_process"] and "tasks" in large.info


def test_a_small_collection_is_featurized_without_starting_ray(collection: Path, tmp_path: Path) -> None:
    """In a fresh process, as a command runs: the features come without importing Ray at all."""
    script = (
        "import json, sys\n"
        "from genre_ray.data.collection import folder_manifest\n"
        "from genre_ray.features import FeatureSettings, pipeline\n"
        "manifest, _ = folder_manifest(sys.argv[1])\n"
        "s = FeatureSettings(kinds=('logmel',), clip_seconds=1.0, n_mels=32)\n"
        "out = pipeline.featurize(manifest, s, sys.argv[2])\n"
        "print(json.dumps({'clips': len(out.clips), 'ray': 'ray' in sys.modules}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, "-c", script, str(collection), str(tmp_path / "cache")], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {"clips": 18 * 7, "ray": False}  # 4 s: 7 clips of 1 s, hop 0.5 s


@pytest.mark.parametrize("damage", ["cut", "lost"])
def test_a_damaged_cache_entry_is_computed_again_with_a_warning(collection: Path, tmp_path: Path, damage: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A Parquet file of a published entry cut short (a full disk, a copy that stopped), or gone: the
    entry is computed again into a new run folder instead of failing the search or losing songs."""
    manifest, _ = folder_manifest(collection)
    first = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4, in_process=True)
    parts = sorted(Path(first.cache_path).glob("*.parquet"))
    assert len(parts) > 1
    if damage == "cut":
        parts[1].write_bytes(parts[1].read_bytes()[:300])
    else:
        parts[1].unlink()
    caplog.set_level("INFO", logger="genre_ray.features.pipeline")
    again = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4, in_process=True)
    assert f"feature cache {first.cache_path} cannot be read (" in caplog.text
    assert ("Parquet magic bytes" if damage == "cut" else "no rows for 4 of its 18 files") in caplog.text
    assert not again.cache_hit and again.cache_path != first.cache_path and again.info["computed"] == ["logmel", "mfcc"]
    for kind in SETTINGS.kinds:  # every clip back, the same values
        assert np.array_equal(again.features[kind], first.features[kind])
    assert pipeline.featurize(manifest, SETTINGS, tmp_path / "cache").cache_hit  # the new entry is published
