"""The shared command line: ``--set``, ``--data x.csv``, ``genre-ray``, ``--json``, exit codes, pipes."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genre_ray import cli
from genre_ray.search import _overrides, build_parser
from genre_ray.search import main as search_main

ROOT = Path(__file__).resolve().parents[1]
SPACE = str(ROOT / "search_spaces" / "cnn.yaml")


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


# ------------------------------------------------------------------------------------------ --set

def test_a_bad_set_value_fails_fast_naming_the_key_before_anything_heavy() -> None:
    code = ("import sys, time; t = time.perf_counter(); from genre_ray.search import main; "
            "rc = main([sys.argv[1], '--set', 'model.params.dropout=1.5']); "
            "heavy = [m for m in ('ray', 'torch', 'mlflow', 'optuna', 'librosa') if m in sys.modules]; "
            "print('HEAVY', heavy, time.perf_counter() - t); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, SPACE], capture_output=True, text=True, timeout=60)
    assert out.returncode == cli.EXIT_USAGE == 2
    heavy, seconds = out.stdout.split("HEAVY ")[1].rsplit(" ", 1)
    assert heavy == "[]" and float(seconds) < 2.0
    assert _lines(out.stderr) == [f"error: {SPACE}: model.params.dropout: must be in [0, 1), got 1.5"]


@pytest.mark.parametrize("item", ["model.params.dropout", "=3", "a..b=1", ".a=1", "train.lr=[1,"])
def test_a_malformed_set_is_one_line_naming_it_and_exit_2(item: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert search_main([SPACE, "--set", item]) == 2
    [line] = _lines(capsys.readouterr().err)
    assert line.startswith(f"error: --set {item!r}: ")


def test_set_values_are_yaml_and_win_over_the_other_options() -> None:
    args = build_parser().parse_args(["x.yaml", "--num-samples", "3", "--set", "search.num_samples=5",
                                      "--set", "features.kind={choice: [logmel, mfcc]}", "--set",
                                      "train.lr=1.0e-3", "--set", "search.time_budget_s=", "--smoke"])
    out = _overrides(args)
    assert out["search.num_samples"] == 5 and out["features.kind"] == {"choice": ["logmel", "mfcc"]}
    assert out["train.lr"] == 1e-3 and out["search.time_budget_s"] is None
    assert out["search.max_epochs"] == 1  # --smoke's own keys stay


def test_check_shows_the_override_applied(capsys: pytest.CaptureFixture[str]) -> None:
    assert search_main([SPACE, "--set", "model.params.dropout=0.25", "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["params"]["dropout"] == 0.25


# ---------------------------------------------------------------------------- search: --json, exit codes

def _summary(tmp_path: Path, skipped: int = 0) -> dict[str, Any]:
    board = pd.DataFrame({"rank": [1, 2], "trial_id": ["t1", "t2"],
                          "best_val_song_acc": [np.float64(0.8), 0.5]})
    split = pd.DataFrame({"train": [6, 6, 12], "val": [2, 1, 3], "test": [2, 2, 4]},
                         index=["a", "b", "total"])
    return {
        "task": "demo", "classes": ["a", "b"], "split_method": "by song", "leaderboard": board,
        "best_config": {"train.lr": np.float64(0.001), "model.depth": np.int64(3)}, "metric": "val_song_acc",
        "best_val": np.float64(0.8), "test": {"acc": np.float64(0.75), "f1": 0.7, "auc": float("nan")},
        "test_songs": np.int64(4), "test_clips": 12, "baseline": {"acc": 0.5}, "split_table": split,
        "trials": {"total": 2, "early": 1, "errors": 0}, "scored_model": None, "zero_shot": None,
        "registered": {"name": "genre-demo", "version": "1", "alias": "champion", "reason": "first"},
        "skipped": pd.DataFrame({"path": [f"x{i}.wav" for i in range(skipped)]}), "out_dir": str(tmp_path),
        "tracking_uri": "sqlite:///x.db", "study_journal": tmp_path / "study.log", "wall_s": 1.5}


@pytest.fixture
def fake_runner(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``genre_ray.search.runner`` replaced by one that records the config and returns ``seen["summaries"]``."""
    seen: dict[str, Any] = {"summaries": []}

    def run_search(cfg: Any, promote: bool = False, resume: bool = False) -> list[dict[str, Any]]:
        seen["cfg"] = cfg
        print("Tune's progress table")  # what Ray and Tune print must not reach the JSON on stdout
        return seen["summaries"]

    module = types.ModuleType("genre_ray.search.runner")
    module.SearchFailed = failed = type("SearchFailed", (RuntimeError,), {})  # type: ignore[attr-defined]
    module.SearchInterrupted = type("SearchInterrupted", (failed,), {})  # type: ignore[attr-defined]
    module.run_search = run_search  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "genre_ray.search.runner", module)
    return seen


def test_json_prints_the_summary_and_the_overrides(fake_runner: dict[str, Any], tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    fake_runner["summaries"] = [_summary(tmp_path)]
    assert search_main([SPACE, "--json", "--set", "train.lr=0.002", "-q"]) == 0
    out, err = capfd.readouterr()
    doc = json.loads(out)
    assert "Tune's progress table" in err
    assert doc["overrides"] == {"train.lr": 0.002} and doc["space"] == SPACE
    [task] = doc["tasks"]
    assert task["validation"] == {"metric": "val_song_acc", "value": 0.8, "songs": 3}
    assert task["test"] == {"acc": 0.75, "f1": 0.7, "auc": None, "songs": 4, "clips": 12}
    assert task["best_config"] == {"train.lr": 0.001, "model.depth": 3} and task["best_trial"] == "t1"
    assert task["registered"]["name"] == "genre-demo" and task["skipped_files"] == 0
    assert task["paths"]["summary"] == str(tmp_path / "summary.md")
    assert task["paths"]["study_journal"] == str(tmp_path / "study.log")
    # MLflow's search_space parameter (runner: params["search_space"] = cfg.source_file) names the overrides
    assert fake_runner["cfg"].source_file == f"{SPACE} --set train.lr=0.002"
    assert fake_runner["cfg"].train["lr"] == 0.002


def test_a_search_with_skipped_files_exits_3(fake_runner: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    fake_runner["summaries"] = [_summary(tmp_path, skipped=2)]
    assert search_main([SPACE, "--json", "-q"]) == cli.EXIT_SKIPPED == 3
    assert json.loads(capsys.readouterr().out)["tasks"][0]["skipped_files"] == 2


def test_a_failed_search_exits_1(fake_runner: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    def fail(cfg: Any, promote: bool = False, resume: bool = False) -> list[dict[str, Any]]:
        raise sys.modules["genre_ray.search.runner"].SearchFailed("task demo: every trial failed")

    sys.modules["genre_ray.search.runner"].run_search = fail  # type: ignore[attr-defined]
    assert search_main([SPACE, "-q"]) == cli.EXIT_FAILED == 1
    assert _lines(capsys.readouterr().err) == ["error: task demo: every trial failed"]


def test_jsonable_converts_numpy_pandas_paths_and_nan() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]})
    doc = {"i": np.int64(3), "f": np.float32(0.5), "arr": np.arange(3), "nan": float("nan"), "p": Path("/x"),
           "frame": frame, "series": frame["a"], "when": pd.Timestamp("2025-01-01"), "ok": np.bool_(True)}
    assert json.loads(json.dumps(cli.jsonable(doc))) == {
        "i": 3, "f": 0.5, "arr": [0, 1, 2], "nan": None, "p": "/x",
        "frame": [{"a": 1, "b": 0.5}, {"a": 2, "b": None}],
        "series": {"0": 1, "1": 2}, "when": "2025-01-01T00:00:00", "ok": True}


# ----------------------------------------------------------------------------------------- --data x.csv

def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_manifest_csv_is_a_csv_source(tmp_path: Path) -> None:
    for name, text in (("m.csv", "path,label,artist\na.wav,rock,x\n"),
                       ("aliases.csv", "Filename,Genre\na.wav,jazz\n"),
                       ("notes.csv", "filename,label,comment\na.wav,rock,live take\n")):
        data = _csv(tmp_path / name, text)
        out = _overrides(build_parser().parse_args(["x.yaml", "--data", str(data)]))
        assert (out["data.source"], out["data.path"]) == ("csv", str(data)), name
        assert out["task"] == Path(name).stem
        assert "features.kind" not in out


def test_a_gtzan_feature_table_is_a_table_source(tmp_path: Path) -> None:
    # the first row has an empty feature (a damaged row, left out later): still a table
    data = _csv(tmp_path / "features_3_sec.csv", "filename,length,chroma_mean,tempo,label\n"
                "blues.00000.0.wav,66149,,120.5,blues\nblues.00000.1.wav,66149,0.3,120.5,blues\n")
    out = _overrides(build_parser().parse_args(["x.yaml", "--data", str(data)]))
    assert (out["data.source"], out["features.kind"], out["task"]) == ("table", "auto", "features_3_sec")


@pytest.mark.parametrize("text, why", [
    ("filename,label,comment,year\na.wav,rock,live,1999\n", "cannot tell"),   # a text and a number column
    ("path,filename,label,f0\na.wav,a.wav,rock,0.5\n", "cannot tell"),        # a manifest and a table at once
    ("filename,label,f0\n", "cannot tell"),                                   # no rows: features unknown
    ("song,genre_name\na.wav,rock\n", "neither a manifest"),
])
def test_an_ambiguous_or_unknown_csv_is_refused_saying_how_to_choose(
        text: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path / "x.csv", text)
    assert search_main([SPACE, "--data", str(data), "--check"]) == 2
    [line] = _lines(capsys.readouterr().err)
    assert line.startswith(f"error: --data {data}: {why}")
    assert "--set data.source=csv" in line and "--set data.source=table" in line


def test_set_data_source_decides_for_an_ambiguous_csv(tmp_path: Path) -> None:
    data = _csv(tmp_path / "x.csv", "filename,label,comment,year\na.wav,rock,live,1999\n")
    out = _overrides(build_parser().parse_args(["x.yaml", "--data", str(data), "--set", "data.source=table"]))
    assert (out["data.source"], out["data.path"], out["features.kind"]) == ("table", str(data), "auto")


def test_a_missing_csv_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert search_main([SPACE, "--data", str(tmp_path / "none.csv"), "--check"]) == 2
    assert _lines(capsys.readouterr().err) == [f"error: --data {tmp_path / 'none.csv'}: no such file"]


# -------------------------------------------------------------------------------------------- genre-ray

def test_genre_ray_dispatches_to_each_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["search", SPACE, "--set", "model.params.dropout=2"]) == 2
    assert "model.params.dropout: must be in [0, 1), got 2" in capsys.readouterr().err
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert help_text.startswith(f"usage: genre-ray {command}"), command
        assert "Exit status: 0 done" in help_text, command
    assert cli.main(["nope"]) == 2 and "not a command" in capsys.readouterr().err
    assert cli.main([]) == 2 and cli.main(["--help"]) == 0


def test_the_installed_script_runs() -> None:
    script = Path(sys.executable).parent / "genre-ray"
    if not script.exists():
        pytest.skip("genre-ray is not installed in this venv (pip install -e .)")
    out = subprocess.run([str(script), "search", SPACE, "--set", "search.num_samples=0"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "search.num_samples" in out.stderr


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "genre_ray.search", SPACE, "--check"],
    [sys.executable, "-c", "import sys; from genre_ray.cli import main; sys.exit(main(sys.argv[1:]))",
     "search", SPACE, "--check"],
], ids=["python-m", "genre-ray"])
def test_a_closed_pipe_ends_quietly(command: list[str]) -> None:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written, as with | head -0
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_outside_what_a_command_saves_ends_with_130_and_no_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    from genre_ray import cli

    def stopped(argv: list[str] | None) -> int:
        raise KeyboardInterrupt

    assert cli.run(stopped, []) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert "130 interrupted (Ctrl-C; a search stopped by SIGTERM: 143)" in cli.EXIT_STATUS


# ------------------------------------------------------------------------------------- predict and tag

class _Hears:
    """Stands in for a loaded model: decodes each file as a real one does, then says ``a``."""

    classes, audio, aggregation, kind, info = ["a", "b"], True, "mean", "logmel", {"split_id": "x"}
    settings = types.SimpleNamespace(clip_seconds=1.0)

    def predict_file(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from genre_ray.data.audio import decode

        decode(str(path), 8000)  # AudioError for a file that is not audio
        return np.array([0.7, 0.3]), np.array([[0.7, 0.3]]), np.array([0.0])


def test_predict_takes_model_both_ways_and_exits_3_on_a_corrupt_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from genre_ray import serving
    from genre_ray.serving.predict import main as predict_main

    loaded: list[str] = []
    monkeypatch.setattr(serving, "load", lambda model, uri: loaded.append(model) or _Hears())
    song = tmp_path / "song.wav"
    sf.write(song, (np.sin(np.arange(8000) / 7) * 0.3).astype(np.float32), 8000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    assert predict_main(["old-form-model", str(song)]) == 0  # the older form: MODEL FILE_OR_DIR...
    assert capsys.readouterr().out.startswith(f"{song}: a 0.70, b 0.30")
    code = predict_main([str(song), "--model", "new-form-model", "--json", str(broken)])
    assert code == cli.EXIT_SKIPPED == 3
    assert loaded == ["old-form-model", "new-form-model"]
    out, err = capsys.readouterr()
    good, bad = json.loads(out)["results"]
    assert good["genre"] == "a" and bad["path"] == str(broken) and bad["error"].startswith("undecodable")
    assert f"{broken}: cannot classify" in err
    assert predict_main(["--model", "m"]) == 2
    assert _lines(capsys.readouterr().err) == ["error: give --model URI and at least one FILE_OR_DIR"]


def _fake_run_tag(errors: int) -> Any:
    def run_tag(library: str, model: str, out: str, **kwargs: Any) -> tuple[pd.DataFrame, Any]:
        from genre_ray.serving.tag import TagSummary

        print("Ray Data's progress")
        table = pd.DataFrame({"path": ["a.wav", "b.wav"], "genre": ["rock", None],
                              "error": [None, "undecodable: not audio"] if errors else [None, None]})
        summary = TagSummary(Path(out), files=2, done_before=0, predicted=2,
                             failed=Counter({"undecodable": errors}) if errors else Counter())
        return table, summary
    return run_tag


@pytest.mark.parametrize("errors, code", [(0, 0), (1, 3)])
def test_tag_exit_code_and_json_summary(errors: int, code: int, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    from genre_ray.serving import tag

    monkeypatch.setattr(tag, "run_tag", _fake_run_tag(errors))
    assert tag.main([str(tmp_path), "--model", "models:/genre-x@champion", "--out", str(tmp_path / "p.csv"),
                     "--json"]) == code
    out, err = capfd.readouterr()
    doc = json.loads(out)
    assert "Ray Data's progress" in err and "predictions:" in err  # the text summary went to stderr
    assert (doc["files"], doc["predicted"], doc["not_predicted"]) == (2, 2, errors)
    assert doc["not_predicted_why"] == ({"undecodable": 1} if errors else {})
    assert doc["model"] == "models:/genre-x@champion" and doc["out"] == str(tmp_path / "p.csv")


# ---------------------------------------------------------------------------------------------- bench

@pytest.fixture
def fake_bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A bench subcommand that loads a config and so takes --set; it records the overrides it got."""
    from genre_ray.bench import SUBCOMMANDS

    seen: dict[str, Any] = {}
    module = types.ModuleType("_fake_bench")
    module.__doc__ = "A fake benchmark."
    module.HELP = "a fake benchmark"  # type: ignore[attr-defined]
    module.CONFIG_OVERRIDES = True  # type: ignore[attr-defined]

    def run_cli(args: Any) -> int:
        seen["overrides"] = args.overrides
        return 0

    module.add_arguments = lambda p: None  # type: ignore[attr-defined]
    module.run_cli = run_cli  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_fake_bench", module)
    monkeypatch.setitem(SUBCOMMANDS, "fake", "_fake_bench")
    return seen


def test_bench_set_reaches_a_subcommand_that_loads_a_config(fake_bench: dict[str, Any],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from genre_ray.bench.__main__ import main as bench_main

    assert bench_main(["fake", "--set", "train.lr=0.01", "--set", "search.seed=3"]) == 0
    assert fake_bench["overrides"] == {"train.lr": 0.01, "search.seed": 3}
    assert bench_main(["fake", "--set", "oops"]) == 2
    [line] = _lines(capsys.readouterr().err)
    assert line.startswith("error: --set 'oops': expected KEY=VALUE with a dotted key")
    with pytest.raises(SystemExit) as done:  # featurize loads no search space: no --set
        bench_main(["featurize", "--set", "a=1"])
    assert done.value.code == 2
