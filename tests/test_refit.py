"""search.refit: the winning configuration trained again on every non-test song."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genre_ray.training.loop import refit, trial_spec
from genre_ray.training.wrappers import ClassicalModel, Standardized, TrialData


def _data(n: int = 48, classes: int = 3, shape: tuple[int, ...] = (8, 10), seed: int = 0) -> TrialData:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = (rng.standard_normal((n, *shape)) + y.reshape(-1, *([1] * len(shape)))).astype(np.float32)
    song = np.arange(n) // 2
    axes = (0, 2) if len(shape) == 2 else (0,)
    return TrialData(x, y, x, y, song, y[::2], [f"c{i}" for i in range(classes)],
                     x.mean(axis=axes, keepdims=True)[0], x.std(axis=axes, keepdims=True)[0] + 1e-5,
                     train_song=song, y_train_song=y[::2])


SPEC = {"cpu": 1, "gpu": 0, "seed": 0, "max_epochs": 10, "metric": "val_song_acc", "groups": {}}


def test_a_neural_refit_trains_the_given_epochs_and_learns() -> None:
    config = {"model.name": "mlp", "model.layers": 1, "model.hidden": 16, "model.dropout": 0.0,
              "model.batch_norm": False, "features.kind": "stats", "train.lr": 1e-2, "train.epochs": 3,
              "train.batch_size": 16, "train.patience": 1, "train.optimizer": "adam", "train.weight_decay": 0.0}
    data = _data(shape=(12,))
    epochs = []
    model = refit(config, data, 6, SPEC, on_epoch=lambda m: epochs.append(m["epoch"]))
    assert epochs == [1, 2, 3, 4, 5, 6]  # the given epochs, not train.epochs; patience is off
    assert isinstance(model, Standardized) and not model.training
    with torch.no_grad():
        acc = (model(torch.from_numpy(data.x_train)).argmax(1).numpy() == data.y_train).mean()
    assert acc > 0.7  # chance is 1/3


def test_a_classical_refit_is_one_fit_on_all_the_songs() -> None:
    config = {"model.name": "logreg", "model.C": 1.0, "features.kind": "stats", "train.aggregation": "mean",
              "train.imbalance": "none"}
    data = _data(shape=(12,))
    model = refit(config, data, 1, SPEC)
    assert isinstance(model, ClassicalModel) and len(model.estimators) == 1
    assert model.estimators[0].n_features_in_ == 12
    assert (model.predict(data.x_train) == data.y_train).mean() > 0.9


def test_refit_is_on_by_default_and_can_be_turned_off() -> None:
    from genre_ray.config import ConfigError, parse_config

    assert parse_config({}, "x.yaml").search["refit"] is True
    assert parse_config({"search": {"refit": False}}, "x.yaml").search["refit"] is False
    with pytest.raises(ConfigError, match=r"search\.refit"):
        parse_config({"search": {"refit": "maybe"}}, "x.yaml")
    assert trial_spec(parse_config({}, "x.yaml"))["seed"] == 0


def test_refit_with_a_class_missing_outside_the_test_split_says_so_in_one_line_and_keeps_the_trial_model(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from types import SimpleNamespace

    import pandas as pd

    from genre_ray.config import parse_config
    from genre_ray.search.runner import _refit

    data = _data(shape=(12,), classes=2)  # the non-test songs hold classes 0 and 1 only
    data.classes = ["blues", "jazz", "rock"]  # rock's only songs are in the test split
    best = SimpleNamespace(config={"model.name": "logreg", "model.C": 1.0, "features.kind": "stats",
                                   "train.aggregation": "mean", "train.imbalance": "none"})
    arrays = {"refit": lambda kind: data, "classes": data.classes, "dev_songs": 24}
    with caplog.at_level(logging.WARNING, logger="genre_ray.search.runner"):
        assert _refit(parse_config({}, "x.yaml"), best, pd.DataFrame(), arrays, tracker=None) is None
    [line] = [r.getMessage() for r in caplog.records if "search.refit" in r.getMessage()]
    assert "rock has no song outside the test split" in line and "\n" not in line
