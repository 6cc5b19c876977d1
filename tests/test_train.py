"""Trial building blocks: device choice, standardisation, prediction; the GPU path when present."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from genre_ray.spaces import TrialPlan
from genre_ray.train import Standardized, TrialData, _train_epoch, build, predict_probs, select_device, \
    validation_metrics


def _plan(params: dict, model: str = "cnn2d", kind: str = "logmel", **train: object) -> TrialPlan:
    return TrialPlan(model, kind, params, dict(train))


def _data(n: int = 24, classes: int = 3) -> TrialData:
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = (rng.standard_normal((n, 16, 20)) + y[:, None, None] * 2.0).astype(np.float32)
    # validation: 6 songs of 2 clips each (clip i and i + 6 share a song and a label)
    return TrialData(x, y, x[:12], y[:12], np.arange(12) % 6, np.arange(6) % classes, ["a", "b", "c"],
                     mean=x.mean(axis=(0, 2), keepdims=True)[0], std=x.std(axis=(0, 2), keepdims=True)[0])


def test_cpu_when_no_gpu_is_asked_or_visible(caplog: pytest.LogCaptureFixture) -> None:
    assert select_device(0).type == "cpu"
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING):
            assert select_device(0.25).type == "cpu"
        assert "no GPU" in caplog.text or "none is visible" in caplog.text


def test_training_learns_a_separable_toy_problem() -> None:
    torch.manual_seed(0)
    data = _data()
    model = build(data, _plan({"depth": 1, "width": 4, "dropout": 0.0, "batch_norm": True}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(0)
    first = _train_epoch(model, opt, x, y, 8, torch.device("cpu"), gen)
    for _ in range(15):
        last = _train_epoch(model, opt, x, y, 8, torch.device("cpu"), gen)
    assert last < first
    metrics = validation_metrics(model, data, torch.device("cpu"))
    assert metrics["val_clip_acc"] >= 0.9 and metrics["val_song_acc"] >= 0.9
    assert set(metrics) >= {"val_clip_acc", "val_clip_f1", "val_song_acc", "val_song_f1", "val_loss"}


def test_standardized_model_serves_probabilities() -> None:
    data = _data()
    model = build(data, _plan({"depth": 1, "width": 4, "dropout": 0.0, "batch_norm": False}))
    model.probabilities = True
    probs = model.eval()(torch.from_numpy(data.x_val))
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(data.x_val)), atol=1e-5)
    assert isinstance(model, Standardized)
    assert predict_probs(model, data.x_val, torch.device("cpu"), batch_size=5).shape == (12, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_epoch_with_amp() -> None:
    data = _data()
    device = select_device(0.25)
    assert device.type == "cuda"
    model = build(data, _plan({"depth": 2, "width": 8, "dropout": 0.0, "batch_norm": True})).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(data.x_train).pin_memory(), torch.from_numpy(data.y_train).pin_memory()
    loss = _train_epoch(model, opt, x, y, 8, device, torch.Generator().manual_seed(0))
    assert np.isfinite(loss)
    assert validation_metrics(model, data, device)["val_clip_acc"] >= 0.0


def test_imbalance_class_weights_and_balanced_sampling() -> None:
    from genre_ray.train import _class_weights

    y = torch.tensor([0] * 8 + [1] * 2)
    w = _class_weights(y, 3)
    assert torch.allclose(w[:2], torch.tensor([10 / 16, 10 / 4])) and w[2] == 0
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((10, 16, 20)).astype(np.float32))
    data = _data()
    model = build(data, _plan({"depth": 1, "width": 4, "dropout": 0.0, "batch_norm": False}))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen: list[torch.Tensor] = []
    original = model.normalize

    def spy(xb: torch.Tensor) -> torch.Tensor:  # sees the raw batch the epoch drew
        seen.append(xb[:, 0, 0].clone())
        return original(xb)

    model.normalize = spy  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        _train_epoch(model, opt, x, y, 10, torch.device("cpu"), gen, "balanced_sampling", 2)
    drawn = torch.cat(seen)
    minority = torch.isin(drawn, x[8:, 0, 0]).float().mean().item()
    assert 0.4 < minority < 0.6  # 20 % of the clips, drawn half of the time


def test_balanced_metrics_are_not_fooled_by_imbalance() -> None:
    from genre_ray.evaluate import classification_scores

    y = np.array([0] * 9 + [1])
    always_zero = np.tile([0.9, 0.1], (10, 1))
    scores = classification_scores(y, always_zero)
    assert scores["acc"] == 0.9 and scores["bacc"] == 0.5 and scores["auc"] == 0.5
    assert scores["f1"] < 0.5
