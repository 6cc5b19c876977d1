"""One spec per model: declared beside its class, read from its signature, nowhere else.

A new model is one file, one registry entry and one YAML; the last test does exactly that with a
throw-away model and searches it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from genre_ray import models
from genre_ray.config import load_config, parse_config
from genre_ray.config.checks import from_rule
from genre_ray.models.spec import DROPOUT, Int, OneOf, SpecError, model_spec, read_spec

PKG = Path(__file__).resolve().parents[1] / "genre_ray"
#: The code that turns a search space into trials: none of it may name a model's parameter.
READERS = [*PKG.glob("config/*.py"), *PKG.glob("training/*.py"), *PKG.glob("search/*.py"), *PKG.glob("serving/*.py"),
           *PKG.glob("tracking/*.py"), PKG / "models" / "__init__.py", PKG / "models" / "spec.py"]


@pytest.mark.parametrize("name", models.model_names())
def test_the_source_and_the_signature_give_the_same_spec(name: str) -> None:
    """What the config reads without importing the model is what the class declares at import."""
    target = models.model_class(name)
    module, attr = (models.REGISTRY.get(name) or models.CLASSICAL[name]).split(":")
    assert read_spec(module, attr) == target.spec == models.spec_of(name)
    signature = inspect.signature(target).parameters
    for key, default in target.spec.defaults.items():  # the constructor's defaults, none of their own
        assert signature[key].default == default, (name, key)


@pytest.mark.parametrize("name", models.model_names())
def test_every_default_passes_its_own_rule(name: str) -> None:
    spec = models.spec_of(name)
    assert spec.rules and set(spec.rules) == set(spec.defaults)
    for key, rule in spec.rules.items():
        assert from_rule(rule)(spec.defaults[key]) == spec.defaults[key], (name, key)


def _named_strings(path: Path) -> set[str]:
    """String constants and keyword arguments of a module, docstrings and argparse metavars aside."""
    tree = ast.parse(path.read_text())
    skip = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    skip |= {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "metavar"}
    out = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
           and id(n) not in skip}
    return out | {k.arg for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg}


def test_no_second_place_names_a_model_parameter() -> None:
    """Config, training and search read a model's parameters from its spec, never by name."""
    params = {p for n in models.model_names() for p in models.spec_of(n).rules}
    offenders = {f"{p.relative_to(PKG)}: {', '.join(sorted(_named_strings(p) & params))}" for p in READERS
                 if _named_strings(p) & params}
    assert not offenders


def test_a_declaration_that_disagrees_with_the_signature_is_refused() -> None:
    def declare(**rules: object) -> None:
        class Net:
            def __init__(self, n_classes: int, input_shape: tuple[int, ...], width: int = 4,
                         groups: tuple[int, ...] | None = None) -> None: ...

        model_spec(inputs=("vector",), **rules)(Net)

    declare(width=Int(1, 8), data_inputs=("groups",))
    with pytest.raises(SpecError, match="depth has a rule but is not a keyword argument"):
        declare(width=Int(1, 8), depth=Int(1, 3), data_inputs=("groups",))
    with pytest.raises(SpecError, match="width has no rule"):
        declare(data_inputs=("groups",))
    with pytest.raises(SpecError, match="groups has no rule"):
        declare(width=Int(1, 8))
    with pytest.raises(SpecError, match="n_classes is given by the trainer"):
        declare(width=Int(1, 8), n_classes=Int(1, 3), data_inputs=("groups",))
    with pytest.raises(SpecError, match="inputs must be input families"):
        model_spec(inputs=("audio",))(lambda width=1: None)
    with pytest.raises(TypeError):
        Int(1, 8, default=4)  # type: ignore[call-arg]  # a rule has no default: the signature's is the one


def test_the_config_reads_a_spec_from_source_without_importing_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "toy_spec_model.py").write_text(textwrap.dedent('''
        from genre_ray.features.pretrained import POOLS
        from genre_ray.models.spec import DROPOUT, Int, OneOf, model_spec

        SIZES = ("s", "m")

        @model_spec(inputs=("vector",), width=Int(1, 4), size=OneOf(*SIZES), pool=OneOf(*POOLS), dropout=DROPOUT)
        class Toy:
            def __init__(self, n_classes, input_shape, width=2, size="m", pool="mean", dropout=0.5):
                pass

        def helper():
            return 1
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = read_spec("toy_spec_model", "Toy")
    assert "toy_spec_model" not in sys.modules
    assert spec.defaults == {"width": 2, "size": "m", "pool": "mean", "dropout": 0.5}
    assert spec.rules["size"] == OneOf("s", "m") and spec.rules["dropout"] == DROPOUT
    assert importlib.import_module("toy_spec_model").Toy.spec == spec
    with pytest.raises(SpecError, match="not decorated"):
        read_spec("toy_spec_model", "helper")
    monkeypatch.delitem(sys.modules, "toy_spec_model")


def test_an_undecorated_registration_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.REGISTRY, "bare", nn.Linear)
    with pytest.raises(SpecError, match="not decorated"):
        models.spec_of("bare")


# A new model: this class (its file), one registry entry (monkeypatched) and one YAML (written below).

@model_spec(inputs=("spectrogram",), width=Int(2, 8), dropout=DROPOUT)
class TinyNet(nn.Module):
    """A throw-away model: each bin averaged over time -> linear -> ReLU -> dropout -> linear."""

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], width: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.hidden = nn.Linear(input_shape[0], width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x.mean(dim=-1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


TINY_YAML = {
    "name": "tiny-spec", "task": "tinyspec",
    "data": {"source": "demo", "demo": {"genres": 3, "songs_per_genre": 5, "seconds": 4.0}},
    "features": {"clip_seconds": 1.0, "clip_overlap": 0.0, "n_mels": 16, "batch_files": 4, "max_clips_per_song": 3},
    "model": {"name": "tiny", "params": {"width": {"int": [2, 4]}}},
    "train": {"lr": 0.01, "batch_size": 16, "epochs": 1},
    "search": {"num_samples": 2, "max_concurrent": 1, "max_epochs": 1, "grace_period": 1, "ensemble": 0},
    "split": {"folds": None},
}


def test_a_registered_model_is_checked_like_the_shipped_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.REGISTRY, "tiny", TinyNet)
    cfg = parse_config(TINY_YAML, "tiny.yaml")
    assert cfg.model.params["width"].args == (2, 4) and cfg.model.params["dropout"] == 0.1  # the signature's
    with pytest.raises(ValueError, match=r"tiny\.yaml: model\.params\.width: must be in \[2, 8\], got 9"):
        parse_config({**TINY_YAML, "model": {"name": "tiny", "params": {"width": 9}}}, "tiny.yaml")
    with pytest.raises(ValueError, match=r"model\.name: does not take stats features"):
        parse_config({**TINY_YAML, "features": {"kind": "stats"}}, "tiny.yaml")


@pytest.mark.slow
def test_a_throw_away_model_is_one_class_one_entry_and_one_yaml_and_searches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_session: object) -> None:
    import ray.cloudpickle

    from genre_ray.search.runner import run_search

    monkeypatch.setitem(models.REGISTRY, "tiny", TinyNet)
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_YAML))
    # The trials' processes cannot import this test module: Ray ships the class itself with the trials.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        [summary] = run_search(load_config(space, {"output.results_dir": str(tmp_path / "results"),
                                                   "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    board = summary["leaderboard"]
    assert len(board) == 2 and (board["epochs"] == 1).all()
    assert board["model.width"].between(2, 4).all() and (board["model.dropout"] == 0.1).all()
    assert summary["registered"] is not None and summary["test_songs"] == 3
