"""Augmentation, schedules, label smoothing, patience, song aggregation and classical trials."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from genre_ray.config.spaces import TrialPlan
from genre_ray.evaluate import song_level
from genre_ray.training.augment import Augment
from genre_ray.training.inference import song_probabilities, validation_metrics
from genre_ray.training.loop import _scheduler, _train_epoch, build
from genre_ray.training.wrappers import TrialData

CPU = torch.device("cpu")


def _data(n_songs: int = 12, clips: int = 4, classes: int = 3, shape: tuple[int, ...] = (16, 20),
          seed: int = 0) -> TrialData:
    """Separable toy clips: ``clips`` per song, songs alternate classes; validation = a copy."""
    rng = np.random.default_rng(seed)
    song = np.repeat(np.arange(n_songs), clips)
    y_song = np.arange(n_songs) % classes
    y = y_song[song]
    x = (rng.standard_normal((len(y), *shape)) + y.reshape(-1, *(1,) * len(shape)) * 1.5).astype(np.float32)
    axes = (0, 2) if len(shape) == 2 else (0,)
    return TrialData(x, y, x.copy(), y.copy(), song, y_song, ["a", "b", "c"][:classes],
                     mean=x.mean(axis=axes, keepdims=True)[0], std=x.std(axis=axes, keepdims=True)[0] + 1e-5,
                     train_song=song, y_train_song=y_song)


def test_song_aggregations_differ_as_defined() -> None:
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]])  # song 0: two mild votes for 0, one sure 1
    song = np.zeros(3, dtype=int)
    assert song_level(probs, song, 1, "mean").argmax() == 1  # 0.4 vs 0.6
    assert song_level(probs, song, 1, "vote").argmax() == 0  # 2 votes against 1
    assert song_level(probs, song, 1, "max").argmax() == 1  # 1.0 beats 0.6
    for method in ("mean", "vote", "max"):
        assert np.isclose(song_level(probs, song, 1, method).sum(), 1.0)
    with pytest.raises(ValueError, match="unknown song aggregation"):
        song_level(probs, song, 1, "median")


def test_gain_and_shift_act_on_raw_features_where_they_mean_something() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).view(2, 3, 10)
    gained = Augment("logmel", gain_db=6.0).raw(x, gen)
    offset = gained - x  # dB features: one constant offset per example, within +-6 dB
    assert torch.allclose(offset, offset[:, :1, :1].expand_as(offset), atol=1e-4) and offset.abs().max() <= 6.0
    assert torch.equal(Augment("chroma", gain_db=6.0).raw(x, gen), x)  # no loudness axis
    wave = torch.ones(4, 1, 100)
    scaled = Augment("waveform", gain_db=6.0).raw(wave, gen)
    assert scaled.std() > 0 and (scaled.amin() >= 10 ** (-6 / 20) - 1e-6) and scaled.amax() <= 10 ** (6 / 20) + 1e-6
    shifted = Augment("logmel", time_shift=0.5).raw(x, torch.Generator().manual_seed(3))
    for i in range(2):  # a circular shift along time only: each row keeps its values
        assert torch.equal(shifted[i].sort(dim=-1).values, x[i].sort(dim=-1).values)
    assert not torch.equal(shifted, x)
    vec = torch.randn(5, 57)
    assert torch.equal(Augment("stats", time_shift=0.5, gain_db=6).raw(vec, gen), vec)


def test_specaugment_masks_and_mixup_targets() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(64, 20, 30)
    y = torch.arange(64) % 4
    masked, target = Augment("logmel", freq_mask=0.3, time_mask=0.3).standardized(x, y, 4, gen)
    assert torch.equal(target, y)
    zero_rows = (masked == 0).all(dim=2).sum(dim=1)  # fully masked frequency bins per example
    assert zero_rows.max() <= 6 and zero_rows.float().mean() > 0.5
    assert ((masked == 0).all(dim=1).sum(dim=1)).max() <= 9  # frames, at most 30 % of 30
    mixed, soft = Augment("stats", mixup=0.4).standardized(torch.randn(64, 10), y, 4, gen)
    assert soft.shape == (64, 4) and torch.allclose(soft.sum(dim=1), torch.ones(64))
    assert ((soft > 0).sum(dim=1) >= 1).all() and ((soft > 0) & (soft < 1)).any()
    same, target = Augment("logmel").standardized(x, y, 4, gen)
    assert torch.equal(same, x) and torch.equal(target, y)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "plateau"])
def test_schedules_change_the_learning_rate(schedule: str) -> None:
    torch.manual_seed(0)
    data = _data()
    plan = TrialPlan("cnn2d", "logmel", {"depth": 1, "width": 4}, {"schedule": schedule})
    model = build(data, plan)
    opt = torch.optim.SGD(model.net.parameters(), lr=0.1)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    sched, when = _scheduler(opt, {"schedule": schedule, "lr": 0.1}, 4, 6, "max")
    lrs = []
    for _ in range(4):
        _train_epoch(model, opt, x, y, 8, CPU, torch.Generator().manual_seed(0),
                     scheduler=sched if when == "batch" else None)
        if when == "epoch":
            sched.step()
        elif when == "metric":
            sched.step(0.5)  # no progress: the plateau schedule halves the rate
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] < 0.1 * 0.9, lrs


def test_label_smoothing_changes_the_loss() -> None:
    data = _data()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    losses = []
    for smoothing in (0.0, 0.3):
        torch.manual_seed(0)
        model = build(data, TrialPlan("mlp", "stats", {"layers": 1, "hidden": 16}, {}))
        opt = torch.optim.SGD(model.net.parameters(), lr=0.0)  # the same weights: only the loss differs
        losses.append(_train_epoch(model, opt, x, y, 8, CPU, torch.Generator().manual_seed(0),
                                   label_smoothing=smoothing))
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)


def test_learned_gru_aggregator_trains_and_is_used() -> None:
    from genre_ray.training.loop import _train_aggregator

    torch.manual_seed(0)
    data = _data(n_songs=18, clips=5)
    model = build(data, TrialPlan("cnn2d", "logmel", {"depth": 1, "width": 4}, {"aggregation": "gru"}))
    assert model.aggregator is not None and "aggregator.rnn.weight_hh_l0" in model.state_dict()
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    agg_opt = torch.optim.Adam(model.aggregator.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(0)
    first = None
    for _ in range(12):
        _train_epoch(model, opt, x, y, 16, CPU, gen)
        loss = _train_aggregator(model, agg_opt, data, x, CPU, gen)
        first = first if first is not None else loss
    assert loss < first
    clip, songs = song_probabilities(model, data.x_val, data.val_song, len(data.y_val_song), CPU)
    assert songs.shape == (18, 3) and np.allclose(songs.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(songs, song_level(clip, data.val_song, 18))  # the GRU, not the mean
    assert validation_metrics(model, data, CPU)["val_song_acc"] >= 0.8


class _Reports:
    """Stands in for a Tune session: collects what a trainable reports."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, Any]] = []

    def __call__(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        self.metrics.append(dict(metrics))
        self.checkpoint = checkpoint


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> _Reports:
    from ray import tune

    out = _Reports()
    monkeypatch.setattr(tune, "report", out)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune.Checkpoint, "from_directory", staticmethod(lambda d: d))
    return out


SPEC = {"cpu": 1, "gpu": 0, "seed": 0, "max_epochs": 30, "metric": "val_song_acc", "groups": {}}


def test_patience_ends_a_trial_that_stops_improving(reports: _Reports) -> None:
    from genre_ray.training.trainable import train_trial

    data = _data()
    config = {"model.name": "mlp", "features.kind": "logmel", "model.layers": 1, "model.hidden": 16,
              "train.optimizer": "adam", "train.lr": 1e-2, "train.weight_decay": 0.0, "train.batch_size": 16,
              "train.epochs": 30, "train.patience": 2, "train.momentum": 0.9}
    train_trial(config, {"logmel": data}, SPEC)
    epochs = [m["epoch"] for m in reports.metrics]
    assert len(epochs) < 30 and reports.metrics[-1]["stopped_by_patience"] == 1
    best = max(range(len(epochs)), key=lambda i: reports.metrics[i]["val_song_acc"])
    assert epochs[-1] - epochs[best] == 2  # exactly `patience` epochs without a better score


def test_classical_trial_reports_once_with_song_metrics(reports: _Reports) -> None:
    from genre_ray.training.trainable import train_trial

    data = _data(shape=(40,))
    config = {"model.name": "svm", "features.kind": "stats", "model.C": 1.0, "model.gamma": 0.0,
              "model.kernel": "rbf", "train.aggregation": "vote", "train.imbalance": "class_weight"}
    train_trial(config, {"stats": data}, SPEC)
    [m] = reports.metrics
    assert m["epoch"] == 1 and m["planned_epochs"] == 1 and m["val_song_acc"] >= 0.9
