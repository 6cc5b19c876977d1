"""Bad configuration fails fast, before Ray starts, with one line naming file, key, rule, value."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from genre_ray.config import METRICS, ConfigError, Dist, load_config, parse_config
from genre_ray.models import model_names

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, rule, value", [
    ("modle: {}\n", "modle", "unknown key", "{}"),
    ("train:\n  lr: fast\n", "train.lr", "must be a number", "'fast'"),
    ("model:\n  params:\n    dropout: 1.5\n", "model.params.dropout", "must be in [0, 1)", "1.5"),
    ("model:\n  name: transformer9000\n", "model.name", "must be one of cnn2d", "'transformer9000'"),
    ("data:\n  source: folder\n  path: /no/such/folder\n", "data.path", "must be an existing folder",
     "'/no/such/folder'"),
    ("train:\n  batch_size: {choice: [16, 32.5]}\n", "train.batch_size", "must be an integer", "32.5"),
    ("train:\n  lr: {loguniform: [0.1, 0.01]}\n", "train.lr", "low < high", "[0.1, 0.01]"),
    ("search:\n  grace_period: 20\n  max_epochs: 5\n", "search.grace_period", "must be <= search.max_epochs",
     "20"),
    ("search:\n  metric: accuracy\n", "search.metric", "must be one of val_song_acc", "'accuracy'"),
    ("model:\n  params:\n    depht: 3\n", "model.params.depht", "unknown key", "3"),
])
def test_bad_values_name_file_key_rule_and_value(tmp_path: Path, text: str, key: str, rule: str,
                                                 value: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: ")
    assert rule in message
    assert message.endswith(f", got {value}")


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_defaults_and_distributions() -> None:
    cfg = parse_config({"train": {"lr": {"loguniform": [1e-4, 1e-2]}, "batch_size": {"choice": [16, 32, 64]}}})
    assert cfg.train["lr"] == Dist("loguniform", (1e-4, 1e-2))
    assert cfg.train["batch_size"] == Dist("choice", (16, 32, 64))
    assert cfg.model["params"]["depth"] == 3 and cfg.search["metric"] in METRICS
    assert cfg.mode == "max"
    flat = cfg.searchable()
    assert "train.lr" in flat and "train.seed" not in flat and cfg.model["by_model"]["cnn2d"]["dropout"] == 0.2


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = _write(tmp_path, "search:\n  num_samples: 3\n")
    cfg = load_config(path, {"data.source": "folder", "data.path": str(tmp_path), "search.num_samples": 5})
    assert cfg.data["path"] == str(tmp_path) and cfg.search["num_samples"] == 5
    assert cfg.name == "space"


def test_shipped_spaces_are_valid() -> None:
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        cfg = load_config(path)
        assert set(cfg.model_names) <= set(model_names())


def test_every_registered_model_is_a_valid_name_with_its_defaults() -> None:
    from genre_ray.models import CLASSICAL, REGISTRY, spec_of

    assert set(model_names()) == set(REGISTRY) | set(CLASSICAL)
    for name in model_names():
        kind = "logmel" if name not in CLASSICAL else "stats"
        kind = {"wavenet": "waveform", "combined": "stacked", "pretrained": "musicnn_mel"}.get(name, kind)
        cfg = parse_config({"model": {"name": name}, "features": {"kind": kind}})
        assert cfg.model.params == spec_of(name).defaults, name


def test_zoo_params_are_per_model_and_checked() -> None:
    cfg = parse_config({"features": {"kind": {"choice": ["logmel", "stats"]}},
                        "model": {"name": {"choice": ["cnn2d", "svm"]},
                                  "params": {"svm": {"C": {"loguniform": [0.1, 10.0]}}}}})
    assert cfg.model_names == ["cnn2d", "svm"] and cfg.feature_kinds == ["logmel", "stats"]
    assert cfg.kinds_for("cnn2d") == ["logmel"] and cfg.kinds_for("svm") == ["stats"]
    assert cfg.model["by_model"]["cnn2d"]["depth"] == 3  # defaults for a model with no params given
    with pytest.raises(ConfigError, match=r"model.params.svm.C: must be in \(0, inf\], got -1"):
        parse_config({"features": {"kind": {"choice": ["logmel", "stats"]}},
                      "model": {"name": {"choice": ["cnn2d", "svm"]}, "params": {"svm": {"C": -1}}}})
    with pytest.raises(ConfigError, match="model.params.resnet: must be one of the models in model.name"):
        parse_config({"model": {"name": {"choice": ["cnn2d", "mlp"]}, "params": {"resnet": {}}}})


@pytest.mark.parametrize("raw, key", [
    ({"model": {"name": "wavenet"}}, "model.name: does not take logmel features (models that do: cnn2d"),
    ({"features": {"kind": {"choice": ["logmel", "waveform"]}}}, "features.kind: no listed model takes waveform"),
    ({"features": {"kind": "table"}}, "features.kind: table does not fit data.source demo"),
    ({"features": {"kind": {"uniform": [0, 1]}}}, "features.kind"),
    ({"model": {"name": "svm"}, "features": {"kind": "stats"}, "train": {"aggregation": "gru"}},
     "train.aggregation: gru and lstm need a neural model"),
    ({"features": {"kind": "contrast", "sample_rate": 8000, "n_contrast_bands": 6}}, "features.n_contrast_bands"),
    ({"train": {"schedule": "linear"}}, "train.schedule: must be one of none, cosine, onecycle, plateau"),
])
def test_zoo_pairings_are_refused_with_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config(raw)


def test_cli_fails_before_ray_or_torch_is_imported(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  epochs: -1\n")
    code = ("import sys; from genre_ray.search import main; rc = main([sys.argv[1]]); "
            "heavy = [m for m in ('ray', 'torch', 'mlflow') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "HEAVY []" in out.stdout
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0] == f"error: {path}: train.epochs: must be in [1, 1000], got -1"


def test_help_explains_every_option() -> None:
    out = subprocess.run([sys.executable, "-m", "genre_ray.search", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0
    for option in ("--data", "--task", "--name", "--num-samples", "--max-concurrent", "--max-epochs",
                   "--cpus-per-trial", "--gpus-per-trial", "--seed", "--results-dir", "--tracking-uri", "--promote",
                   "--check"):
        assert option in out.stdout


def test_data_option_makes_its_own_task(tmp_path: Path) -> None:
    from genre_ray.search import _overrides, build_parser

    music = tmp_path / "Radio Library"
    music.mkdir()
    args = build_parser().parse_args(["x.yaml", "--data", str(music)])
    assert _overrides(args)["task"] == "Radio-Library"
    args = build_parser().parse_args(["x.yaml", "--data", str(music), "--task", "radio"])
    assert _overrides(args)["task"] == "radio"


def test_max_epochs_override_shortens_the_grace_period(tmp_path: Path) -> None:
    path = _write(tmp_path, "search:\n  grace_period: 3\n  max_epochs: 8\n")
    cfg = load_config(path, {"search.max_epochs": 1})
    assert cfg.search["max_epochs"] == 1 and cfg.search["grace_period"] == 1
    assert load_config(path, {"search.max_epochs": 5}).search["grace_period"] == 3
