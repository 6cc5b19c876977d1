"""Progress on the console: featurizing and tagging count files (a bar on a terminal, a log line every
few seconds otherwise), the search prints Tune's status table, and ``-q`` silences both."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genre_ray.config import SMOKE_OVERRIDES, load_config
from genre_ray.data.collection import folder_manifest
from genre_ray.features import FeatureSettings, pipeline
from genre_ray.search import tuning
from genre_ray.serving import tag

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml"
SETTINGS = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, clip_overlap=0.0, n_mels=16)
LINE = re.compile(r"featurizing: (\d+)/(\d+) files \((\d+)%\)")


class Terminal(io.StringIO):
    """A console that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _lines(caplog: pytest.LogCaptureFixture, name: str, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name and r.getMessage().startswith(what)]


# ------------------------------------------------------------------------------------------ fast

def test_on_a_terminal_the_bar_shows_the_count_the_rate_and_the_time_left(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genre_ray.features.pipeline")
    screen = Terminal()
    with pipeline.Progress("featurizing", 6, stream=screen) as progress:
        for done in (2, 4, 6):
            time.sleep(0.15)  # tqdm redraws at most every 0.1 s
            progress.update(done)
    shown = screen.getvalue()
    assert re.search(r"featurizing: +\d+%.*\| 4/6 \[00:\d\d<00:\d\d, +[\d.]+ files/s\]", shown), shown
    assert "6/6" in shown.rsplit("\r", 1)[-1]  # the bar ends complete
    assert not _lines(caplog, "genre_ray.features.pipeline", "featurizing")  # a bar, not log lines as well


def test_without_a_terminal_the_writes_of_a_pass_become_log_lines_with_counts_and_time_left(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The featurizing watcher counts the Parquet files the write puts in its folder (one per task)."""
    caplog.set_level(logging.INFO, logger="genre_ray.features.pipeline")
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.05)
    store, folder = pipeline._Store(tmp_path), str(tmp_path / "run")
    table = pa.table({"x": [1]})

    def seen(count: str) -> None:
        deadline = time.monotonic() + 10
        while not any(f" {count} files" in m for m in _lines(caplog, "genre_ray.features.pipeline", "featurizing")):
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)

    with pipeline._write_progress(store, folder, files=12, tasks=3):
        seen("0/12")  # the folder does not exist yet
        Path(folder).mkdir()
        (Path(folder) / "notes.txt").write_text("not a part")
        pq.write_table(table, Path(folder) / "a.parquet")
        seen("4/12")
        pq.write_table(table, Path(folder) / "b.parquet")
        seen("8/12")
    lines = _lines(caplog, "genre_ray.features.pipeline", "featurizing")
    eta = r"featurizing: 8/12 files \(67%\), [\d.]+ files/s, about [\d.]+ (s|min \d\d s) left"
    assert any(re.fullmatch(eta, m) for m in lines), lines
    assert re.fullmatch(r"featurizing: 12/12 files \(100%\), [\d.]+ files/s in [\d.]+ s", lines[-1]), lines
    assert not [t for t in threading.enumerate() if t.name == "featurize-progress"]  # the watcher is gone


def test_a_failed_pass_ends_its_progress_without_a_done_line(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genre_ray.features.pipeline")
    store = pipeline._Store(tmp_path)
    with pytest.raises(RuntimeError), pipeline._write_progress(store, str(tmp_path), 5, 1):
        raise RuntimeError("write failed")
    assert not any(" in " in m for m in _lines(caplog, "genre_ray.features.pipeline", "featurizing"))
    assert not [t for t in threading.enumerate() if t.name == "featurize-progress"]


def _fake_batches(listing: Any, classes: list[str], per_batch: int) -> Any:
    """What the tagging dataset yields: prediction rows, a few at a time."""
    class Dataset:
        def iter_batches(self, **kwargs: Any) -> Any:
            for i in range(0, len(listing), per_batch):
                part = listing.iloc[i:i + per_batch]
                time.sleep(0.06)
                rows = {"path": part["path"].tolist(), "size": part["size"].tolist(),
                        "mtime_ns": part["mtime_ns"].tolist(), "genre": [classes[0]] * len(part),
                        "confidence": [1.0] * len(part), "error": [None] * len(part),
                        **{f"prob_{c}": [float(c == classes[0])] * len(part) for c in classes}}
                yield pa.Table.from_pydict(rows, schema=tag._schema(classes))
    return Dataset()


def _tag_stream(tmp_path: Path) -> tuple[int, Any]:
    import soundfile as sf

    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for i in range(9):
        sf.write(lib / f"{i}.wav", np.zeros(800, np.float32), 8000)
    listing = tag.list_library(lib)
    store = tag.PartStore(tmp_path / "out.csv", "models:/m/1", "sha-1", ["a", "b"], restart=True)
    summary = tag.TagSummary(tmp_path / "out.csv", len(listing), 0)
    tag._stream(_fake_batches(listing, ["a", "b"], 2), store, summary, 64, 30.0, len(listing))
    return len(listing), summary


def test_tagging_counts_the_files_as_their_rows_arrive(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="genre_ray.tag")
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.1)
    files, summary = _tag_stream(tmp_path)
    lines = _lines(caplog, "genre_ray.tag", "tagging")
    counts = [int(re.match(r"tagging: (\d+)/9 files", m).group(1)) for m in lines]  # type: ignore[union-attr]
    assert summary.predicted == files == 9 and counts == sorted(counts) and 0 < counts[0] < 9, lines
    assert re.fullmatch(r"tagging: 9/9 files \(100%\), [\d.]+ files/s in [\d.]+ s", lines[-1]), lines


def test_tag_quiet_silences_the_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # main sets it
    assert tag.main(["-q", "--undo", str(tmp_path / "no-such-undo")]) == 2  # the log is set up, then usage
    capfd.readouterr()
    _tag_stream(tmp_path)
    assert not _lines(caplog, "genre_ray.tag", "tagging")
    assert "tagging:" not in capfd.readouterr().err
    assert tag.build_parser().parse_args(["--quiet"]).quiet


def test_the_status_table_has_the_searched_parameters_every_trial_has(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genre_ray.search")
    cnn = tuning.parameter_columns(load_config(SPACE))
    assert cnn == {"model.depth": "depth", "model.width": "width", "model.dropout": "dropout",
                   "model.batch_norm": "batch_norm", "train.optimizer": "optimizer", "train.lr": "lr",
                   "train.weight_decay": "weight_decay", "train.batch_size": "batch_size"}
    zoo = load_config(SPACE.with_name("zoo.yaml"))
    # In a zoo a model's parameters are missing from the other models' trials, and Tune's line
    # "Current best trial ... parameters={...}" fails on a missing one: only the shared ones are columns.
    assert tuning.parameter_columns(zoo) == {"model.name": "model"}
    assert all("model.name" in draw for draw in tuning.space_draws(zoo))


def test_search_quiet_turns_tune_output_off(caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT")  # restored to unset after the test
    caplog.set_level(logging.WARNING, logger="genre_ray.search")  # what -q sets
    assert tuning.progress_options(load_config(SPACE)) == {"verbose": 0, "progress_reporter": None}
    # The legacy engine even when quiet: the default one prints its experiment table at verbose=0.
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"


# ------------------------------------------------------------------------------------------ with Ray

@pytest.fixture()
def collection(tiny_demo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "music"
    shutil.copytree(tiny_demo, root)
    return root


def test_featurizing_logs_counts_of_files_and_quiet_logs_none(
        collection: Path, tmp_path: Path, ray_session: Any, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.2)
    pipeline.ray_data_progress_off()
    manifest, _ = folder_manifest(collection)
    caplog.set_level(logging.INFO, logger="genre_ray.features.pipeline")
    pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=2, in_process=False)
    lines = _lines(caplog, "genre_ray.features.pipeline", "featurizing:")
    counts = [int(LINE.match(m).group(1)) for m in lines]  # type: ignore[union-attr]
    assert len(lines) >= 2 and counts == sorted(counts), lines  # a line every 0.2 s while Ray Data works
    assert re.fullmatch(r"featurizing: 18/18 files \(100%\), [\d.]+ files/s in [\d.]+ s", lines[-1]), lines
    err = capfd.readouterr().err
    assert "Progress bars disabled" not in err and "Starting execution of Dataset" not in err, err[-2000:]

    caplog.clear()
    caplog.set_level(logging.WARNING, logger="genre_ray.features.pipeline")  # what -q sets
    out = pipeline.featurize(manifest, replace(SETTINGS, n_mels=24), tmp_path / "cache", batch_files=2,
                             in_process=False)
    assert not out.cache_hit and not _lines(caplog, "genre_ray.features.pipeline", "featurizing")
    assert "featurizing" not in capfd.readouterr().err


def test_featurizing_in_process_counts_the_files_batch_by_batch(
        collection: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.0)  # a line at every batch
    manifest, _ = folder_manifest(collection)
    caplog.set_level(logging.INFO, logger="genre_ray.features.pipeline")
    out = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4)
    assert out.info["in_process"]
    lines = _lines(caplog, "genre_ray.features.pipeline", "featurizing:")
    counts = [int(LINE.match(m).group(1)) for m in lines]  # type: ignore[union-attr]
    assert counts[:-1] == [4, 8, 12, 16, 18], lines  # 18 files, 4 per batch; then the closing line
    assert re.fullmatch(r"featurizing: 18/18 files \(100%\), [\d.]+ files/s in [\d.]+ s", lines[-1]), lines
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="genre_ray.features.pipeline")  # what -q sets
    pipeline.featurize(manifest, replace(SETTINGS, n_mels=24), tmp_path / "cache", batch_files=4)
    assert not _lines(caplog, "genre_ray.features.pipeline", "featurizing")
    assert "featurizing" not in capfd.readouterr().err


def test_the_search_prints_tunes_table_with_the_objective_and_the_best_so_far(
        tmp_path: Path, ray_session: Any, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Tuner of a search (Optuna, ASHA, its RunConfig), with a trainable of a few lines."""
    from ray import tune

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT")
    caplog.set_level(logging.INFO, logger="genre_ray.search")
    cfg = load_config(SPACE, {**SMOKE_OVERRIDES, "search.num_samples": 3, "search.max_epochs": 2,
                              "train.epochs": 2})
    metric = cfg.search["metric"]

    def trainable(config: dict[str, Any]) -> None:
        for epoch in range(2):
            tune.report({metric: config["model.depth"] / 10 + epoch / 100})

    monkeypatch.setattr(tuning, "_trainable", lambda *args: trainable)
    grid = tuning.tuner(cfg, {}, None, tmp_path / "ray", "progress-test").fit()
    shown = capsys.readouterr().out
    assert len(grid) == 3 and not grid.errors
    assert "Number of trials: 3/3 (3 TERMINATED)" in shown, shown[-3000:]
    best = max(grid, key=lambda r: r.metrics[metric])
    assert re.search(rf"Current best trial: \w+ with {metric}=[\d.]+ and parameters=\{{'model.depth': "
                     rf"{best.config['model.depth']}", shown), shown[-3000:]
    header = [line for line in shown.splitlines() if "Trial name" in line][-1]  # metrics once reported
    for column in (metric, "epochs", "depth", "lr", "batch_size"):
        assert f" {column} " in header, header
    assert "Using AsyncHyperBand" in shown  # ASHA's count of the trials it stopped


def test_the_table_leaves_out_a_trial_that_ended_before_its_first_result(tmp_path: Path, ray_session: object,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """A time budget or a stopper can end a trial that has not reported yet; Tune's sort of the
    finished rows by the objective then compared None with a float and the search failed at its
    last table (``python -m genre_ray.bench search``, 2026-12-08)."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from genre_ray.search.trial_runs import SearchReporter

    reporter = SearchReporter({"val_loss": "val_loss"}, {"lr": "lr"}, every=0)
    reporter.setup(start_time=time.time(), total_samples=3, metric="val_loss", mode="min")
    trials = []
    for tid, loss in (("a", 0.9), ("b", None), ("c", 0.4)):
        storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name=tid)
        trial = Trial("train_trial", config={"lr": 0.01}, trial_id=tid, storage=storage, stub=True)
        trial.set_status(Trial.TERMINATED)
        if loss is not None:
            trial.run_metadata.last_result = {"val_loss": loss, "training_iteration": 1, "config": trial.config}
        trials.append(trial)
    reporter.report(trials, done=True)
    out = capsys.readouterr().out
    assert "1 trial(s) ended before their first result (not in the table)" in out
    rows = [line for line in out.splitlines() if line.startswith("| train_trial_")]
    assert [r.split()[1] for r in rows] == ["train_trial_c", "train_trial_a"]  # by the objective
