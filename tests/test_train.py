"""Trial building blocks: device choice, standardisation, prediction; the GPU path when present."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genre_ray.config.spaces import TrialPlan
from genre_ray.training.device import (
    AmpPolicy,
    Precision,
    amp_policy,
    select_device,
    set_threads,
    threads_for,
)
from genre_ray.training.inference import predict_probs, validation_metrics
from genre_ray.training.loop import BareReporter, _batch, _train_epoch, build, run_trial, trial_spec
from genre_ray.training.wrappers import Standardized, TrialData


def _plan(params: dict, model: str = "cnn2d", kind: str = "logmel", **train: object) -> TrialPlan:
    return TrialPlan(model, kind, params, dict(train))


def _data(n: int = 24, classes: int = 3) -> TrialData:
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = (rng.standard_normal((n, 16, 20)) + y[:, None, None] * 2.0).astype(np.float32)
    # validation: 6 songs of 2 clips each (clip i and i + 6 share a song and a label)
    return TrialData(x, y, x[:12], y[:12], np.arange(12) % 6, np.arange(6) % classes, ["a", "b", "c"],
                     mean=x.mean(axis=(0, 2), keepdims=True)[0], std=x.std(axis=(0, 2), keepdims=True)[0])


def test_cpu_when_no_gpu_is_asked_or_visible(caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with caplog.at_level(logging.WARNING):
        assert select_device(0).type == "cpu"
    assert "GPU" not in caplog.text  # none was asked for: nothing to say
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert select_device(0.25).type == "cpu"
    assert "a GPU was requested but none is visible" in caplog.text


def test_thread_count_follows_the_cpu_share() -> None:
    assert [threads_for(c) for c in (0.25, 0.5, 1, 1.5, 2, 2.5, 4)] == [1, 1, 1, 1, 2, 2, 4]
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
        assert set_threads(0.5) == 1 and torch.get_num_threads() == 1  # again, as in a reused actor
    finally:
        torch.set_num_threads(before)


def test_interop_threads_are_set_once_per_process() -> None:
    """A fresh process (a new trial actor) gets both pools sized; a second trial in it does not fail."""
    code = ("import torch; from genre_ray.training.device import set_threads; set_threads(1); x = torch.ones(64, 64); "
            "x @ x; set_threads(2); print(torch.get_num_threads(), torch.get_num_interop_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.split() == ["2", "1"]  # intra-op follows the latest share; inter-op kept the first


def test_amp_policy_from_capability_flags() -> None:
    assert amp_policy("cpu", bf16_supported=True) == AmpPolicy(None, False)
    assert amp_policy("cuda", bf16_supported=True) == AmpPolicy(torch.bfloat16, False)
    assert amp_policy("cuda", bf16_supported=False) == AmpPolicy(torch.float16, True)
    cpu = Precision(torch.device("cpu"), bf16=True)
    assert cpu.scaler is None and isinstance(cpu.autocast(), nullcontext)
    with pytest.warns(UserWarning, match="CUDA is not available") if not torch.cuda.is_available() \
            else nullcontext():
        fp16 = Precision(torch.device("cuda"), bf16=False)
    assert isinstance(fp16.scaler, torch.amp.GradScaler) and fp16.policy.dtype == torch.float16
    assert Precision(torch.device("cuda"), bf16=True).scaler is None


def test_batches_are_gathered_rows_on_the_cpu() -> None:
    x, idx = torch.arange(20.0).view(10, 2), torch.tensor([3, 0, 7])
    assert torch.equal(_batch(x, idx, torch.device("cpu")), x[idx])


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
    from genre_ray.training.loop import _class_weights

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

    model.normalize = spy  # type: ignore[method-assign,assignment]
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


CONFIG = {"model.name": "cnn2d", "features.kind": "logmel", "model.depth": 1, "model.width": 4,
          "model.dropout": 0.0, "model.batch_norm": True, "train.optimizer": "adam", "train.lr": 1e-2,
          "train.weight_decay": 0.0, "train.batch_size": 8, "train.epochs": 4, "train.schedule": "cosine"}
SPEC = {"cpu": 1, "gpu": 0, "seed": 0, "max_epochs": 4, "metric": "val_song_acc", "groups": {}}


class _Lost(RuntimeError):
    pass


class _Resume(BareReporter):
    """A bare run that resumes from ``start``, keeps every epoch's checkpoint under ``root`` and is
    lost (raises) after epoch ``lost_after``, as a trial whose worker dies."""

    def __init__(self, root: Path, start: Path | None = None, lost_after: int = 0) -> None:
        super().__init__()
        self.root, self.start, self.lost_after = root, start, lost_after

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        return nullcontext(str(self.start) if self.start else None)

    def report(self, metrics: dict[str, Any], save: Callable[[str], None]) -> None:
        super().report(metrics, save)
        folder = self.root / f"epoch{metrics['epoch']}"
        folder.mkdir(parents=True)
        save(str(folder))
        if metrics["epoch"] == self.lost_after:
            raise _Lost


def test_a_bare_run_is_the_tune_trial_and_resumes_exactly(tmp_path: Path) -> None:
    straight = BareReporter()
    run_trial(CONFIG, {"logmel": _data()}, SPEC, straight)
    assert [m["epoch"] for m in straight.metrics] == [1, 2, 3, 4] and len(straight.times) == 4
    assert all(m["planned_epochs"] == 4 for m in straight.metrics)

    first = _Resume(tmp_path / "a", lost_after=2)
    with pytest.raises(_Lost):
        run_trial(CONFIG, {"logmel": _data()}, SPEC, first)
    assert [m["epoch"] for m in first.metrics] == [1, 2]
    rest = _Resume(tmp_path / "b", start=tmp_path / "a" / "epoch2")
    run_trial(CONFIG, {"logmel": _data()}, SPEC, rest)
    assert [m["epoch"] for m in rest.metrics] == [3, 4]
    for key in ("train_loss", "val_loss", "lr"):  # the same epochs, to the last bit of the generator
        assert rest.metrics[-1][key] == pytest.approx(straight.metrics[-1][key], rel=1e-5)


def test_trial_spec_carries_the_search_settings() -> None:
    from genre_ray.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml",
                      {"resources.cpu": 2, "resources.gpu": 0.25})
    spec = trial_spec(cfg, {"stacked": (64, 20, 12)})
    assert spec == {"cpu": 2, "gpu": 0.25, "seed": cfg.train["seed"], "max_epochs": cfg.search["max_epochs"],
                    "metric": cfg.search["metric"], "groups": {"stacked": (64, 20, 12)}}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trial_uses_amp_pinned_batches_and_keeps_its_scaler() -> None:
    device = select_device(0.25)
    x, idx = torch.randn(10, 4, 5), torch.tensor([1, 4])
    batch = _batch(x, idx, device)
    assert batch.device.type == "cuda" and torch.equal(batch.cpu(), x[idx])
    precision = Precision(device)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    assert precision.policy.dtype == expected
    assert (precision.scaler is not None) == (expected == torch.float16)
    reporter = BareReporter(checkpoints=True)
    run_trial(CONFIG, {"logmel": _data()}, {**SPEC, "gpu": 0.25}, reporter)
    assert len(reporter.metrics) == 4 and np.isfinite(reporter.metrics[-1]["train_loss"])
    assert torch.backends.cudnn.benchmark
