"""A real process SIGKILLed at the worst moment leaves nothing that a later run mistakes for complete.

Each test starts a real process with ``GENRE_RAY_PAUSE_AT`` naming a pause point
(:mod:`genre_ray._faults`), waits until the process reports that it stopped there, kills it with
SIGKILL (its whole process group), and checks what a later run sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _procs import child_env

ROOT = Path(__file__).resolve().parents[1]


def _kill_at(cmd: list[str], point: str, tmp_path: Path, skip: int = 0, timeout: float = 300,
             env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` until it pauses at ``point`` (after ``skip`` passes), SIGKILL its group; its output."""
    marker = tmp_path / f"paused-{point}"
    env = {**(env or child_env()), "GENRE_RAY_PAUSE_AT": point, "GENRE_RAY_PAUSE_FILE": str(marker),
           "GENRE_RAY_PAUSE_SKIP": str(skip)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {point}:\n"
                                 f"{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"never reached {point}")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return out


def _library(root: Path, n: int = 4) -> dict[Path, bytes]:
    root.mkdir()
    rng = np.random.default_rng(0)
    files = {}
    for i in range(n):
        path = root / f"song{i}.flac"
        sf.write(path, (0.2 * rng.standard_normal(8000)).astype(np.float32), 8000, format="FLAC")
        files[path] = path.read_bytes()
    return files


TAGGER = textwrap.dedent("""
    import sys
    import pandas as pd
    from genre_ray.serving.tagwrite import apply_plan, plan_tags
    paths, undo_dir = sys.argv[2:], sys.argv[1]
    predictions = pd.DataFrame({"path": paths, "genre": ["jazz"] * len(paths), "confidence": [0.9] * len(paths)})
    apply_plan(plan_tags(predictions, 0.5), undo_dir)
""")


@pytest.mark.parametrize("point", ["tagwrite.before_replace", "tagwrite.mid_record"])
def test_tagging_killed_mid_file_leaves_every_file_original_or_tagged_and_undo_restores_them(
        tmp_path: Path, point: str) -> None:
    from genre_ray.data.tags import read_tags
    from genre_ray.serving.tagwrite import undo

    files = _library(tmp_path / "music")
    undo_dir = tmp_path / "undo"
    _kill_at([sys.executable, "-c", TAGGER, str(undo_dir), *map(str, files)], point, tmp_path, skip=2)
    states = []
    for path, original in files.items():
        now = path.read_bytes()
        genres = read_tags(path).genres
        assert now == original or list(genres) == ["jazz"], f"{path.name} is neither original nor tagged"
        sf.read(path)  # and it still decodes
        states.append("original" if now == original else "tagged")
    assert states == ["tagged", "tagged", "original", "original"]  # killed at the third file
    [log] = list(undo_dir.glob("tag-*"))
    result = undo(log)
    assert set(result["status"]) <= {"restored", "already_original"}
    for path, original in files.items():
        assert path.read_bytes() == original  # every file byte for byte as it was
    assert not list((tmp_path / "music").glob(".*"))  # and the killed run's temporary copy is gone


@pytest.mark.slow
def test_a_search_killed_while_registering_is_not_mistaken_for_finished(tmp_path: Path,
                                                                       joined_env: dict[str, str]) -> None:
    """The search joins the test worker's Ray (as on a cluster): what the kill must not leave behind
    is in the results folder and the MLflow store, which the driver alone writes."""
    import mlflow

    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "genre_ray.search", str(ROOT / "search_spaces" / "cnn.yaml"), "--smoke",
           "--results-dir", str(results), "-q"]
    _kill_at(cmd, "register.before_alias", tmp_path, env=joined_env)
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    [orphan] = client.search_model_versions("name='genre-demo'")  # logged, but no alias and no decision
    assert "alias_at_registration" not in orphan.tags
    state = (results / "cnn" / "search_state.json").read_text()
    assert '"finished": false' in state  # --resume would take it up again
    assert not (results / "cnn" / "summary.md").exists()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=joined_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    champion = client.get_model_version_by_alias("genre-demo", "champion")
    assert champion.version != orphan.version and champion.tags["alias_at_registration"] == "champion"
    assert (results / "cnn" / "summary.md").exists()


FEATURIZE = textwrap.dedent("""
    import sys
    import pandas as pd
    from genre_ray.features import FeatureSettings
    from genre_ray.features.pipeline import featurize
    paths = sys.argv[2:]
    settings = FeatureSettings(kinds=("logmel",), sample_rate=8000, clip_seconds=1.0, clip_overlap=0.0,
                               n_fft=256, hop_length=128, n_mels=16)
    table = featurize(pd.DataFrame({"path": paths}), settings, sys.argv[1], batch_files=2)
    print("HIT" if table.cache_hit else "COMPUTED", len(table.clips))
""")


@pytest.mark.slow
def test_a_featurization_killed_before_its_cache_marker_is_computed_again_not_read(tmp_path: Path) -> None:
    songs = tmp_path / "songs"
    songs.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for i in range(4):
        paths.append(songs / f"s{i}.wav")
        sf.write(paths[-1], (0.3 * rng.standard_normal(3 * 8000)).astype(np.float32), 8000)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-c", FEATURIZE, str(cache), *map(str, paths)]
    _kill_at(cmd, "cache.before_marker", tmp_path)
    written = [p for p in cache.rglob("*.parquet")]
    assert written and not list(cache.rglob("_genre_ray_cache.json"))  # data, but nothing published
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=child_env())
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert again.stdout.split()[-2:] == ["COMPUTED", "12"]  # the killed run's files were not trusted
    third = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=child_env())
    assert third.stdout.split()[-2:] == ["HIT", "12"]  # the complete entry is


PARTS = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pyarrow as pa
    from genre_ray.serving.tag import PartStore, _schema
    store = PartStore(Path(sys.argv[1]), "models:/m/1", "sha-1", ["a", "b"])
    for i in range(2):  # a part of one row each; the second is killed before it is named
        row = {"path": f"/music/{i}.wav", "size": 1, "mtime_ns": 1, "genre": "a", "confidence": 0.9, "error": None,
               "prob_a": 0.9, "prob_b": 0.1}
        store.write(pa.Table.from_pylist([row], schema=_schema(["a", "b"])))
""")


def test_tag_killed_while_writing_a_part_keeps_only_the_whole_parts(tmp_path: Path) -> None:
    from genre_ray.serving.tag import PartStore

    out = tmp_path / "predictions.csv"
    _kill_at([sys.executable, "-c", PARTS, str(out)], "tag.part_before_replace", tmp_path, skip=1)
    parts = out.with_name(out.name + ".parts")
    assert len(list(parts.glob("part-*.parquet"))) == 1 and len(list(parts.glob("*.tmp"))) == 1
    rows = PartStore(out, "models:/m/1", "sha-1", ["a", "b"]).read()  # what a resumed run trusts
    assert rows["path"].tolist() == ["/music/0.wav"]  # the killed part is not read: that file is predicted again
