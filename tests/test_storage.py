"""Shared storage: paths and URIs through pyarrow filesystems, node-local detection, and the audio
and the feature cache on a real (local, moto) S3 endpoint and at file:// URIs. No network."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from conftest import write_tone

from genre_ray import storage
from genre_ray.data.audio import AudioError, decode
from genre_ray.data.collection import CollectionError, folder_manifest
from genre_ray.data.manifests import csv_manifest
from genre_ray.features import FeatureSettings, pipeline

MOUNTS = r"""
/dev/vda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /tmp tmpfs rw 0 0
filer:/export/home /home nfs4 rw,vers=4.2 0 0
/dev/sdb1 /home/alice/scratch xfs rw 0 0
//nas/music /mnt/music cifs rw 0 0
s3fs /mnt/bucket fuse.s3fs rw 0 0
lxcfs /var/lib/lxcfs fuse.lxcfs rw 0 0
mountpoint-s3 /mnt/mp fuse rw 0 0
10.0.0.5@tcp:/lfs /lustre lustre rw 0 0
/dev/sdc1 /mnt/my\040disk ext4 rw 0 0
drvfs /mnt/c 9p rw 0 0
"""


@pytest.fixture()
def mounts(tmp_path: Path) -> Path:
    path = tmp_path / "mounts"
    path.write_text(MOUNTS)
    return path


def test_is_uri() -> None:
    for uri in ("s3://bucket/x", "gs://b", "file:///tmp/x", "hdfs://nn:8020/data", "S3://B/k"):
        assert storage.is_uri(uri), uri
    for path in ("/tmp/x", "relative/x", "~/music", "C:\\music", "C://music", "", "s3:/one-slash"):
        assert not storage.is_uri(path), path
    assert not storage.is_uri(Path("/tmp/x"))


def test_filesystem_of_paths_and_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    fs, path = storage.filesystem("~/music/rock")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path.resolve() / "music" / "rock")
    monkeypatch.chdir(tmp_path)
    assert storage.filesystem("rel")[1] == str(tmp_path.resolve() / "rel")
    fs, path = storage.filesystem(f"file://{tmp_path}/a%20b/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/a b"
    with pytest.raises(ValueError):
        storage.filesystem("nosuchscheme://x/y")


def test_join_keeps_the_query_and_encodes_names() -> None:
    uri = "s3://bucket/music?region=eu-west-1&scheme=http"
    joined = storage.join(uri, "rock/a b#1.wav")
    assert joined == "s3://bucket/music/rock/a%20b%231.wav?region=eu-west-1&scheme=http"
    assert storage.join("/data/music", "rock", "a.wav") == os.path.join("/data/music", "rock", "a.wav")
    assert storage.describe("s3://key:secret@bucket/x?secret_key=s&region=r") == "s3://bucket/x?region=r"


def test_node_local_follows_the_mount_table(mounts: Path, tmp_path: Path) -> None:
    local = {"/srv/cache": True, "/tmp/x/y/z": True, "/home/alice/cache": False,
             "/home/alice/scratch/cache": True, "/mnt/music/gtzan": False, "/mnt/bucket/c": False,
             "/var/lib/lxcfs/x": True, "/mnt/mp/x": False, "/lustre/project/cache": False,
             "/mnt/my disk/cache": True, "/mnt/c/Users": True, "/homework": True}
    for path, expected in local.items():
        assert storage.node_local(path, mounts=mounts) is expected, path
    assert storage.node_local("file:///home/alice/x", mounts=mounts) is False
    for uri in ("s3://b/cache", "gs://b/c", "hdfs://nn/c"):
        assert storage.node_local(uri, mounts=mounts) is False
    assert storage.node_local("/home/alice/x", mounts=tmp_path / "no-such-mount-table") is True


def test_node_local_judges_a_missing_path_by_its_existing_parent(tmp_path: Path) -> None:
    link_target = tmp_path / "nfs"
    link_target.mkdir()
    (tmp_path / "link").symlink_to(link_target)
    table = tmp_path / "mounts"
    table.write_text(f"/dev/vda1 / ext4 rw 0 0\nfiler:/x {link_target} nfs rw 0 0\n")
    assert storage.node_local(str(tmp_path / "link" / "not" / "yet"), mounts=table) is False
    assert storage.node_local(str(tmp_path / "other"), mounts=table) is True


def test_disk_usage_and_open_input(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "d" / "e" / "b.bin").write_bytes(b"y" * 5)
    assert storage.disk_usage(tmp_path / "d") == 15
    assert storage.disk_usage(f"file://{tmp_path}/d") == 15
    assert storage.disk_usage(tmp_path / "d" / "a.bin") == 10
    assert storage.disk_usage(tmp_path / "absent") == 0
    with storage.open_input(f"file://{tmp_path}/d/e/b.bin") as fh:
        assert fh.read() == b"y" * 5
    with pytest.raises(FileNotFoundError):
        storage.open_input(tmp_path / "absent")


# ------------------------------------------------------------------------------ a local S3 (moto)

SETTINGS = FeatureSettings(kinds=("logmel", "mfcc"), clip_seconds=1.0, clip_overlap=0.5, n_mels=16, n_mfcc=8)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 genres x 3 songs of 1.5 s, and one file with a space in its name."""
    root = tmp_path_factory.mktemp("storage") / "music"
    for g, genre in enumerate(("rock", "jazz")):
        for i in range(3):
            write_tone(root / genre / f"{genre} {i}.wav", seconds=1.5, freq=220.0 * (1 + g) + 30 * i)
    return root


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"127.0.0.1:{port}"
    server.stop()


class Bucket:
    """A fresh bucket on the moto endpoint, and ``s3://`` URIs into it."""

    def __init__(self, endpoint: str, name: str) -> None:
        import boto3

        self.endpoint, self.name = endpoint, name
        self.client = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                                   aws_access_key_id="testing", aws_secret_access_key="testing")
        self.client.create_bucket(Bucket=name)

    def uri(self, key: str) -> str:
        # The keys ride in the URI because the Ray workers were started before this test set the
        # environment; on a cluster every node has its own credentials (environment, IAM role).
        return (f"s3://testing:testing@{self.name}/{key.strip('/')}"
                f"?region=us-east-1&endpoint_override={self.endpoint}&scheme=http")

    def upload(self, folder: Path, prefix: str) -> str:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                self.client.upload_file(str(path), self.name, key)
        return self.uri(prefix)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture()
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Bucket:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    name = request.node.name.lower().replace("_", "-")[:50].strip("-")
    return Bucket(s3_endpoint, name)


def test_folder_manifest_lists_an_s3_collection(bucket: Bucket, collection: Path) -> None:
    uri = bucket.upload(collection, "gtzan")
    manifest, skipped = folder_manifest(uri)
    local, _ = folder_manifest(collection)
    assert skipped.empty and sorted(manifest["label"]) == sorted(local["label"])
    assert list(manifest["song_id"]) == list(local["song_id"])  # "jazz/jazz 0", ...
    assert manifest["path"].str.startswith(f"s3://testing:testing@{bucket.name}/gtzan/").all()
    assert np.allclose(manifest["duration"], local["duration"])
    hashes = pipeline.content_hashes(manifest["path"].tolist())
    assert hashes == pipeline.content_hashes(local["path"].tolist())
    with pytest.raises(CollectionError, match="not a folder"):
        folder_manifest(bucket.uri("nothing-here"))


def test_a_csv_manifest_may_list_uris(bucket: Bucket, collection: Path, tmp_path: Path) -> None:
    uri = bucket.upload(collection, "gtzan")
    songs = {storage.join(uri, f"{g}/{g} {i}.wav"): g for g in ("rock", "jazz") for i in range(3)}
    gone = storage.join(uri, "rock/gone.wav")
    csv = tmp_path / "songs.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{g}\n" for p, g in {**songs, gone: "rock"}.items()))
    manifest, skipped = csv_manifest(csv)
    assert list(manifest["path"]) == list(songs) and (manifest["duration"] > 1.4).all()
    assert manifest["song_id"].iloc[0] == f"{bucket.name}/gtzan/rock/rock 0"
    assert list(skipped["path"]) == [gone] and list(skipped["reason"]) == ["missing"]


def test_feature_cache_on_s3_is_computed_once_then_read(
        bucket: Bucket, collection: Path, tmp_path: Path, ray_session: object,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    manifest, _ = folder_manifest(bucket.upload(collection, "gtzan"))
    cache = bucket.uri("cache")
    first = pipeline.featurize(manifest, SETTINGS, cache, batch_files=3)
    assert not first.cache_hit and first.skipped.empty and len(first.clips) == 6 * 2
    assert any(k.endswith("/_genre_ray_cache.json") for k in bucket.keys("cache/"))
    assert first.cache_path.startswith(f"s3://{bucket.name}/cache/") and "testing" not in first.cache_path

    def no_compute(*args: object, **kwargs: object) -> None:
        raise AssertionError("featurized again")

    monkeypatch.setattr(pipeline, "_compute", no_compute)
    caplog.set_level("INFO", logger="genre_ray.features.pipeline")
    again = pipeline.featurize(manifest, SETTINGS, cache)
    assert again.cache_hit and again.cache_path == first.cache_path
    assert f"feature cache hit (logmel): s3://{bucket.name}/cache/" in caplog.text
    monkeypatch.undo()
    local, _ = folder_manifest(collection)
    on_disk = pipeline.featurize(local, SETTINGS, tmp_path / "cache", batch_files=3)
    assert not on_disk.cache_hit
    for kind in SETTINGS.kinds:  # the same bytes, whether the audio and the cache are in S3 or on disk
        assert np.array_equal(again.features[kind], on_disk.features[kind])
        assert np.array_equal(first.features[kind], again.features[kind])
    assert storage.disk_usage(cache) > 0 and storage.node_local(cache) is False


def test_a_corrupt_object_is_skipped_with_its_uri(bucket: Bucket, collection: Path, tmp_path: Path,
                                                  ray_session: object) -> None:
    uri = bucket.upload(collection, "gtzan")
    good = (collection / "rock" / "rock 0.wav").read_bytes()
    bucket.client.put_object(Bucket=bucket.name, Key="gtzan/rock/truncated.wav", Body=good[:2000])
    bucket.client.put_object(Bucket=bucket.name, Key="gtzan/jazz/noise.wav", Body=b"not audio at all" * 64)
    manifest, scan_skipped = folder_manifest(uri)
    noise = storage.join(uri, "jazz/noise.wav")
    assert list(scan_skipped["path"]) == [noise] and scan_skipped["reason"].iloc[0] == "undecodable"
    truncated = storage.join(uri, "rock/truncated.wav")
    out = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=3)
    reasons = dict(zip(out.skipped["path"], out.skipped["reason"], strict=True))
    assert reasons == {truncated: "too_short"} or reasons == {truncated: "undecodable"}
    assert len(out.clips) == 6 * 2  # every good song is still there
    with pytest.raises(AudioError) as err:  # an object that vanished after the listing
        decode(storage.join(uri, "rock/gone.wav"), 22050)
    assert err.value.reason == "undecodable" and "rock/gone.wav" in str(err.value)


def test_an_interrupted_publish_on_s3_is_never_trusted(bucket: Bucket, collection: Path, ray_session: object,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, _ = folder_manifest(collection)
    cache = bucket.uri("cache")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the run dies after its Parquet files, before any marker

    monkeypatch.setattr(storage, "put_file", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.featurize(manifest, SETTINGS, cache, batch_files=3)
    monkeypatch.undo()
    assert not [k for k in bucket.keys("cache/") if k.endswith(".parquet")]  # cleaned up on the way out
    # A run killed outright leaves its Parquet files and no marker: not trusted, computed again.
    key = pipeline.cache_key(pipeline.content_hashes(manifest["path"].tolist()), SETTINGS)
    bucket.client.put_object(Bucket=bucket.name, Key=f"cache/{key}/run-dead/part-0.parquet", Body=b"PAR1")
    out = pipeline.featurize(manifest, SETTINGS, cache, batch_files=3)
    assert not out.cache_hit and len(out.clips) == 6 * 2 and "run-dead" not in out.cache_path
    assert pipeline.featurize(manifest, SETTINGS, cache).cache_hit
    # Left-overs are swept once old enough (a day; here at once), and what the entries name stays.
    pipeline._Store(cache).sweep(max_age_s=-1)
    assert not [k for k in bucket.keys("cache/") if "run-dead" in k]
    assert pipeline.featurize(manifest, SETTINGS, cache).cache_hit


def test_a_cache_written_before_run_folders_still_reads(collection: Path, tmp_path: Path,
                                                        ray_session: object) -> None:
    manifest, _ = folder_manifest(collection)
    cache = tmp_path / "cache"
    one = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, n_mels=16)
    first = pipeline.featurize(manifest, one, cache, batch_files=3)
    run = Path(first.cache_path)
    entry = run.parent  # the old layout: the Parquet files beside a marker without "data"
    for part in run.iterdir():
        part.rename(entry / part.name)
    run.rmdir()
    (entry / "_genre_ray_cache.json").write_text(json.dumps({"version": pipeline.CACHE_VERSION}))
    again = pipeline.featurize(manifest, one, cache)
    assert again.cache_hit and again.cache_path == str(entry)
    assert np.array_equal(again.features["logmel"], first.features["logmel"])
    (cache / ".tmp-old").mkdir()  # the temporary folder of an older version's killed run
    (cache / ".tmp-old" / "x.parquet").write_bytes(b"PAR1")
    pipeline._Store(cache).sweep(max_age_s=-1)  # the data beside an old marker is named by it: kept
    assert not (cache / ".tmp-old").exists() and pipeline.featurize(manifest, one, cache).cache_hit


def test_file_uris_for_the_audio_and_the_cache(collection: Path, tmp_path: Path, ray_session: object) -> None:
    manifest, _ = folder_manifest(f"file://{collection}")
    local, _ = folder_manifest(collection)
    assert list(manifest["path"]) == list(local["path"])  # a file:// folder is a local folder
    cache = f"file://{tmp_path}/the%20cache"
    first = pipeline.featurize(manifest, SETTINGS, cache, batch_files=3)
    assert (tmp_path / "the cache").is_dir() and storage.node_local(cache)
    again = pipeline.featurize(manifest, SETTINGS, cache)
    assert again.cache_hit and np.array_equal(again.features["logmel"], first.features["logmel"])
    wave = decode(f"file://{collection}/rock/rock%200.wav", 22050)
    assert np.array_equal(wave, decode(str(collection / "rock" / "rock 0.wav"), 22050))


def test_a_uri_collection_names_its_task_after_its_last_folder() -> None:
    from genre_ray.search import _task_name

    assert _task_name("s3://testing:testing@bucket/music/gtzan?endpoint_override=127.0.0.1:9&scheme=http") == "gtzan"
    assert _task_name("gs://bucket/") == "bucket"
    assert _task_name("/srv/music/radio/") == "radio"


@pytest.mark.slow
def test_a_whole_search_with_audio_cache_and_tune_storage_in_s3(bucket: Bucket, tiny_demo: Path, tmp_path: Path,
                                                                 ray_session: object) -> None:
    """The cluster layout: nothing the trials or Ray Data tasks touch is on a node's own disk."""
    import yaml
    from _spaces import tiny_space

    from genre_ray.config import load_config
    from genre_ray.search.runner import run_search

    space = tmp_path / "s3.yaml"
    doc = tiny_space("s3-search", "s3", "unused", epochs=2, num_samples=2)
    doc["data"] = {"source": "folder", "path": bucket.upload(tiny_demo, "music")}
    doc["features"]["cache_dir"] = bucket.uri("cache")
    doc["search"]["storage_path"] = bucket.uri("ray")
    doc["search"]["max_concurrent"] = 1  # one trial process: concurrency is not what this tests
    space.write_text(yaml.safe_dump(doc))
    cfg = load_config(space, {"output.results_dir": str(tmp_path / "results"),
                              "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    summary = run_search(cfg)[0]
    keys = bucket.keys()
    assert any(k.startswith("cache/") and k.endswith("_genre_ray_cache.json") for k in keys)
    checkpoints = {k.split("/checkpoint_")[0] for k in keys if k.startswith("ray/") and "/checkpoint_" in k}
    assert len(checkpoints) == 2  # each trial's checkpoints went to the bucket
    assert summary["disk"]["experiment"].startswith(f"s3://{bucket.name}/ray/")  # credentials not shown
    assert summary["disk"]["experiment_bytes"] > 0 and 1 <= summary["disk"]["checkpoints"] <= 4
    assert summary["test_songs"] > 0 and not (tmp_path / "results" / "ray").exists()
