"""``python -m genre_ray.tag``: a complete table over 100+ files, resume, and tags written then undone."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf

from genre_ray.config import SMOKE_OVERRIDES, load_config
from genre_ray.serving import tag
from genre_ray.serving.tag import KEY_COLUMNS, PartStore, TagError, list_library, run_tag

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn1d.yaml"
URI = "models:/genre-demo@champion"
N_SONGS = 102


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ fast

def _rows(paths: list[str], listing: pd.DataFrame, classes: list[str]) -> pa.Table:
    keys = listing.set_index("path").loc[paths]
    frame = pd.DataFrame({"path": paths, "size": keys["size"].to_numpy(),
                          "mtime_ns": keys["mtime_ns"].to_numpy(), "genre": classes[0], "confidence": 1.0,
                          "error": None, **{f"prob_{c}": float(c == classes[0]) for c in classes}})
    return pa.Table.from_pandas(frame, schema=tag._schema(classes), preserve_index=False)


def test_a_file_is_done_only_while_its_size_and_mtime_match(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(4):
        sf.write(lib / f"{i}.wav", np.zeros(800, np.float32), 8000)
    listing = list_library(lib)
    store = PartStore(tmp_path / "out.csv", "models:/m/1", "sha-1", ["a", "b"])
    store.write(_rows(listing["path"][:3].tolist(), listing, ["a", "b"]))
    assert sorted(tag._done(store, listing)["path"]) == sorted(listing["path"][:3])
    changed = listing.copy()
    changed.loc[0, "mtime_ns"] += 1  # the file was edited since: predicted again
    assert sorted(tag._done(store, changed)["path"]) == sorted(listing["path"][1:3])
    same = PartStore(tmp_path / "out.csv", "models:/m@champion", "sha-1", ["a", "b"])  # same weights
    assert len(tag._done(same, listing)) == 3
    with pytest.raises(TagError, match="another model"):  # the same URI, other weights: refused
        PartStore(tmp_path / "out.csv", "models:/m/1", "sha-2", ["a", "b"])
    assert tag._done(PartStore(tmp_path / "out.csv", "models:/m/1", "sha-2", ["a", "b"], restart=True),
                     listing).empty


def test_an_actor_predicts_from_a_model_folder_without_importing_mlflow(tmp_path: Path) -> None:
    import torch

    from genre_ray.features import FeatureSettings
    from genre_ray.models.cnn1d import CNN1D
    from genre_ray.serving.classifier import SongClassifier
    from genre_ray.training.wrappers import Standardized

    torch.manual_seed(0)
    settings = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, clip_overlap=0.0, n_mels=16)
    bins = settings.shape("logmel")[0]
    net = Standardized(CNN1D(2, settings.shape("logmel"), depth=1, width=4), np.zeros((bins, 1)),
                       np.full((bins, 1), 20.0), probabilities=True)
    folder = SongClassifier(net, ["a", "b"], "logmel", settings).save(tmp_path / "model")
    song = tmp_path / "song.wav"
    sf.write(song, np.sin(np.arange(44100) / 7).astype(np.float32) * 0.3, 22050)
    script = f"""
import sys, pandas as pd
from genre_ray.serving.tag import Predictor
rows = pd.DataFrame({{"path": [{str(song)!r}], "size": [1], "mtime_ns": [2]}})
table = Predictor({str(folder)!r})(rows)
print(table.num_rows, table.column("genre")[0], "mlflow" in sys.modules, "ray" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-2:] == ["False", "False"], run.stdout  # neither MLflow nor Ray was imported
    assert run.stdout.split()[0] == "1" and run.stdout.split()[1] in ("a", "b")


# ------------------------------------------------------------------------------------------ slow

@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> str:
    """A smoke search registers genre-demo@champion; returns the tracking URI of its store."""
    from genre_ray.search.runner import run_search

    results = tmp_path_factory.mktemp("tag-smoke")
    uri = f"sqlite:///{results / 'mlflow.db'}"
    cfg = load_config(SPACE, {**SMOKE_OVERRIDES, "output.results_dir": str(results), "tracking.uri": uri})
    [summary] = run_search(cfg)
    assert summary["registered"]["model_uri"] == URI
    return uri


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_demo: Path) -> Path:
    """102 songs of 1.5-4 s cut from the demo songs (WAV, FLAC and OGG), one broken file, one text file."""
    root = tmp_path_factory.mktemp("library")
    songs = sorted(tiny_demo.rglob("*.wav"))
    rng = np.random.default_rng(0)
    formats = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")]
    for i in range(N_SONGS):
        wave, sr = sf.read(songs[i % len(songs)], dtype="float32")
        start = int(rng.integers(0, sr))
        piece = wave[start:start + int(rng.uniform(1.5, 3.0) * sr)] * rng.uniform(0.5, 1.0)
        ext, fmt, subtype = formats[i % 3] if i % 10 == 0 else formats[0]
        folder = root / f"artist{i % 7}" / f"album{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"track{i:03d}.{ext}", piece, sr, format=fmt, subtype=subtype)
    (root / "artist0" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    (root / "artist0" / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def predicted(library: Path, registered: str, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[pd.DataFrame, Any, Path]:
    out = tmp_path_factory.mktemp("predicted") / "predictions.parquet"
    table, summary = run_tag(library, URI, out, tracking_uri=registered, flush_rows=16)
    return table, summary, out


@pytest.mark.slow
def test_tag_writes_a_complete_table(predicted: tuple[pd.DataFrame, Any, Path], library: Path,
                                     registered: str) -> None:
    import mlflow

    table, summary, out = predicted
    listing = list_library(library)
    assert len(listing) == N_SONGS + 1 and summary.predicted == N_SONGS + 1 and summary.done_before == 0
    assert sorted(table["path"]) == sorted(listing["path"]) and table["path"].is_unique
    assert pd.read_parquet(out).shape == table.shape
    good = table[table["error"].isna()]
    probs = good.filter(like="prob_")
    assert len(good) == N_SONGS and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (good["genre"] == probs.idxmax(axis=1).str[len("prob_"):]).all()
    assert np.allclose(good["confidence"], probs.max(axis=1))
    bad = table[table["error"].notna()]
    assert bad["path"].str.endswith("broken.wav").all() and bad["error"].str.startswith("undecodable").all()
    assert dict(summary.failed) == {"undecodable": 1}
    # the same answers as the registered pyfunc model, one file at a time
    mlflow.set_tracking_uri(registered)
    pyfunc = mlflow.pyfunc.load_model(URI)
    for row in good.iloc[::40].itertuples():
        ref = pyfunc.predict(pd.DataFrame({"path": [row.path]}))
        assert ref["genre"][0] == row.genre and abs(ref["confidence"][0] - row.confidence) < 1e-6


class _StopAfter:
    """A dataset whose iteration is interrupted (as by Ctrl-C during ``next``) after ``n`` batches."""

    def __init__(self, ds: Any, n: int) -> None:
        self.ds, self.n = ds, n

    def iter_batches(self, **kwargs: Any) -> Any:
        return _Interrupting(iter(self.ds.iter_batches(**kwargs)), self.n)


class _Interrupting:
    """Ray Data's batch iterator, with a KeyboardInterrupt at batch ``n``; ``close`` is the real one."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n, self.i = inner, n, 0

    def __iter__(self) -> _Interrupting:
        return self

    def __next__(self) -> Any:
        if self.i == self.n:
            raise KeyboardInterrupt
        self.i += 1
        return next(self.inner)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.slow
def test_an_interrupted_run_finishes_without_redoing_finished_files(library: Path, registered: str,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out, real = tmp_path / "predictions.csv", tag._dataset
    parts = out.with_name(out.name + ".parts")
    monkeypatch.setattr(tag, "_dataset", lambda *a: _StopAfter(real(*a), 3))
    with pytest.raises(KeyboardInterrupt):
        run_tag(library, URI, out, tracking_uri=registered, batch_files=4, flush_rows=1000)
    first = pd.concat([pd.read_parquet(p) for p in sorted(parts.glob("part-*"))])
    assert 0 < len(first) < N_SONGS and not out.exists()  # what came before Ctrl-C was saved

    second: list[str] = []

    def recording(todo: pd.DataFrame, *rest: Any) -> Any:
        second.extend(todo["path"])
        return real(todo, *rest)

    monkeypatch.setattr(tag, "_dataset", recording)
    table, summary = run_tag(library, URI, out, tracking_uri=registered, batch_files=4, workers=1)
    assert summary.done_before == len(first) and summary.predicted == len(second)
    assert not set(second) & set(first["path"])  # no finished file was predicted again
    assert sorted([*second, *first["path"]]) == sorted(list_library(library)["path"])
    written = pd.read_csv(out)
    assert len(written) == N_SONGS + 1 and written["path"].is_unique
    state = json.loads((parts / "state.json").read_text())
    assert state["model"] == URI and len(state["model_sha256"]) == 64
    assert len(list(parts.glob("part-*"))) == 1  # compacted


@pytest.mark.slow
def test_a_killed_cli_run_resumes_without_redoing_the_files_it_saved(library: Path, registered: str,
                                                                    tmp_path: Path, joined_env: dict[str, str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI in a subprocess on the worker's Ray, killed (SIGKILL: no clean-up at all) once its first
    part is saved."""
    out = tmp_path / "predictions.csv"
    parts = out.with_name(out.name + ".parts")
    cli = [sys.executable, "-m", "genre_ray.tag", str(library), "--model", URI, "--tracking-uri", registered,
           "--out", str(out), "--workers", "1", "--flush-rows", "1"]
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe nobody reads would block the CLI
    with log.open("w") as stderr:
        proc = subprocess.Popen(cli, env=joined_env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while (not list(parts.glob("part-*.parquet")) and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            proc.kill()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    err = log.read_text(errors="replace")
    found = sorted(parts.glob("part-*.parquet"))
    assert found, f"no part saved (exit {proc.returncode}): {err[-3000:]}"
    saved = pd.concat([pd.read_parquet(p) for p in found])
    assert 0 < len(saved) < N_SONGS + 1 and not out.exists(), err[-2000:]  # killed before the end

    redone: list[str] = []
    real = tag._dataset

    def recording(todo: pd.DataFrame, *rest: Any) -> Any:
        redone.extend(todo["path"])
        return real(todo, *rest)

    monkeypatch.setattr(tag, "_dataset", recording)
    table, summary = run_tag(library, URI, out, tracking_uri=registered, workers=1)
    assert summary.done_before == len(saved) and not set(redone) & set(saved["path"])
    assert sorted([*redone, *saved["path"]]) == sorted(list_library(library)["path"])
    again = table.set_index("path").loc[saved["path"]]  # the saved rows are in the table as they were
    assert (again["genre"].fillna("") == saved.set_index("path")["genre"].fillna("")).all()
    assert len(pd.read_csv(out)) == N_SONGS + 1


@pytest.mark.slow
def test_write_tags_then_undo_leaves_every_file_byte_identical(predicted: tuple[pd.DataFrame, Any, Path],
                                                               library: Path, registered: str,
                                                               tmp_path: Path) -> None:
    from genre_ray.data.tags import read_tags

    table, _, out = predicted
    files = list_library(library)["path"]
    before = {p: _sha(p) for p in files}
    args = [str(library), "--model", URI, "--tracking-uri", registered, "--out", str(out), "--write-tags",
            "--threshold", "0"]
    # 3: done, but the broken file is a row with its error (genre_ray.cli.EXIT_SKIPPED)
    assert tag.main(args) == 3  # a dry run: every file predicted already, nothing written
    assert {p: _sha(p) for p in files} == before and not (library / ".genre_ray-undo").exists()
    assert tag.main([*args, "--apply", "--undo-dir", str(tmp_path / "undo")]) == 3
    tagged = table[table["error"].isna()]
    for row in tagged.itertuples():
        assert read_tags(row.path).genres == (row.genre,) and _sha(row.path) != before[row.path]
    assert _sha(library / "artist0" / "broken.wav") == before[str(library / "artist0" / "broken.wav")]
    [undo_folder] = list((tmp_path / "undo").iterdir())
    assert tag.main(["--undo", str(undo_folder)]) == 0
    assert {p: _sha(p) for p in files} == before
    assert not [p for p in library.rglob("*") if p.name.endswith(".genre-tmp")]
    assert (list_library(library)[KEY_COLUMNS[1:]].to_numpy() ==  # size and mtime are back too
            table.set_index("path").loc[files, KEY_COLUMNS[1:]].to_numpy()).all()
