"""The config's sections are typed, frozen dataclasses; every key's rule and default is declared once."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genre_ray.config import (
    SMOKE_OVERRIDES,
    ConfigError,
    Dist,
    Features,
    Search,
    Task,
    Train,
    load_config,
    parse_config,
)
from genre_ray.config.schema import yaml_keys

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "search_spaces" / "zoo.yaml"


def test_sections_are_typed_and_frozen() -> None:
    cfg = parse_config({"train": {"lr": {"loguniform": [1e-4, 1e-2]}}, "search": {"num_samples": 4}}, "x.yaml")
    assert isinstance(cfg.train, Train) and isinstance(cfg.features, Features) and isinstance(cfg.search, Search)
    assert cfg.train.lr == Dist("loguniform", (1e-4, 1e-2)) and cfg.search.num_samples == 4
    assert cfg.features.kind == "logmel" and cfg.data.demo.genres == 8  # auto resolved; defaults filled in
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.num_samples = 5  # type: ignore[misc]


def test_sections_still_read_like_mappings_during_the_transition() -> None:
    cfg = parse_config({}, "x.yaml")
    assert cfg.train["lr"] == cfg.train.lr and cfg.search.get("metric") == "val_song_acc"
    assert tuple(cfg.search) == yaml_keys(Search) and dict(cfg.resources) == {"cpu": 1.0, "gpu": 0.0}
    assert {**cfg.data["demo"]}["songs_per_genre"] == 24 and "seed" in cfg.train and "nope" not in cfg.train
    with pytest.raises(KeyError):
        cfg.train["nope"]


def test_a_config_pickles_and_prints_as_before() -> None:
    cfg = load_config(ZOO)
    again = pickle.loads(pickle.dumps(cfg))  # Ray ships it
    assert again == cfg and again.to_dict() == cfg.to_dict()
    doc = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert list(doc) == ["name", "task", "tasks", "data", "features", "model", "train", "split", "search",
                         "resources", "tracking", "output"]
    assert doc["model"]["left_out"] == [] and set(doc["model"]["by_model"]) == set(cfg.model_names)
    assert "left_out" not in parse_config({}, "x.yaml").to_dict()["model"]  # only a zoo lists what it left out


def test_tasks_are_typed_and_checked_with_their_key() -> None:
    cfg = parse_config({"tasks": [{"name": "a", "merge": {"rock": ["Rock", "hard rock"]}}, {"name": "b"}]}, "x.yaml")
    assert [t.name for t in cfg.tasks] == ["a", "b"] and isinstance(cfg.tasks[0], Task)
    assert cfg.tasks[0].merge == {"rock": ["Rock", "hard rock"]} and cfg.tasks[1].negative == "the world"
    assert parse_config({"task": "mine"}, "x.yaml").tasks == [Task(name="mine")]
    for tasks, message in [
        ([{"name": "a", "colour": 1}], "x.yaml: tasks[0].colour: unknown key (valid: name, classes, merge, "
                                       "positive, negative, min_songs), got 1"),
        ([{"name": "a", "merge": {"rock": 3}}], "x.yaml: tasks[0].merge.rock: must be a non-empty list of strings, "
                                                "got 3"),
        ([{"classes": ["a"]}], "x.yaml: tasks[0].name: is required, got None"),
        ([{"name": "a"}, {"name": "a"}], "x.yaml: tasks[1].name: must be unique among tasks, got 'a'"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({"tasks": tasks}, "x.yaml")
        assert str(info.value) == message


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    space = tmp_path / "s.yaml"
    space.write_text("model:\n  name: cnn2d\n")
    with pytest.raises(ConfigError, match=r"^.*s\.yaml: model\.params\.depth: must be in \[1, 6\], got 9$"):
        load_config(space, {"model.params.depth": 9})
    with pytest.raises(ConfigError, match=r"s\.yaml: train\.colour: unknown key \(valid: optimizer, lr, "):
        load_config(space, {"train.colour": "red"})
    smoke = load_config(ZOO, SMOKE_OVERRIDES)
    assert smoke.search.num_samples == 2 and smoke.train.epochs == 1 and smoke.split.folds is None


def test_the_contrast_rule_is_one_rule() -> None:
    from genre_ray.features.kinds import contrast_error
    from genre_ray.features.spectral import FeatureSettings

    rule = contrast_error(6, 8000)
    assert rule and rule.startswith("must be in [1, 5] at sample_rate 8000")
    with pytest.raises(ConfigError) as info:
        parse_config({"features": {"kind": "contrast", "sample_rate": 8000}}, "x.yaml")
    assert str(info.value) == f"x.yaml: features.n_contrast_bands: {rule}, got 6"
    with pytest.raises(ValueError) as bad:
        FeatureSettings(kinds=("contrast",), sample_rate=8000)
    assert str(bad.value) == f"n_contrast_bands: {rule}, got 6"


def test_check_of_the_zoo_imports_nothing_heavy() -> None:
    code = ("import sys; from genre_ray.search import main; rc = main([sys.argv[1], '--check']); "
            "print('HEAVY', [m for m in ('ray', 'torch', 'mlflow', 'optuna', 'librosa', 'sklearn', 'pydantic') "
            "if m in sys.modules]); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(ZOO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "HEAVY []" in out.stdout
