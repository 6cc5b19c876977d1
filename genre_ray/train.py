"""The Ray Tune trainable: build a model from the registry, train, report every epoch.

The features of the train and validation songs reach every trial through the object store
once (``tune.with_parameters``); a trial never reads the cache or the audio. The test songs
are not in what a trial receives at all.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from genre_ray.evaluate import classification_scores, song_level
from genre_ray.models import build_model
from genre_ray.spaces import split_params

__all__ = ["Ensemble", "Standardized", "TrialData", "predict_probs", "select_device", "train_trial"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"


@dataclass
class TrialData:
    """What every trial receives: train and validation clips, never the test split."""

    x_train: np.ndarray  # (n, *input_shape) float32
    y_train: np.ndarray  # (n,) int64 class index
    x_val: np.ndarray
    y_val: np.ndarray
    val_song: np.ndarray  # (n_val_clips,) song index in [0, n_val_songs)
    y_val_song: np.ndarray  # (n_val_songs,) class index
    classes: list[str]
    mean: np.ndarray  # statistics of the training clips, shaped to broadcast over one example
    std: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class Standardized(nn.Module):
    """Per-bin standardisation in front of a network, so a saved model is self-contained.

    With ``probabilities=True`` the output is softmax probabilities instead of logits: the form
    a registered model serves.
    """

    def __init__(self, net: nn.Module, mean: np.ndarray, std: np.ndarray, probabilities: bool = False) -> None:
        super().__init__()
        self.net = net
        # Shaped to broadcast over one example: (bins, 1) for clips, (features,) for vectors.
        self.register_buffer("mean", torch.tensor(np.array(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.array(std), dtype=torch.float32))
        self.probabilities = probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        return torch.softmax(out.float(), dim=-1) if self.probabilities else out


def select_device(gpu: float) -> torch.device:
    """CUDA when the trial asked for a GPU share and one is visible, else CPU."""
    if gpu > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if gpu > 0:
        log.warning("a GPU was requested but none is visible to this trial; training on CPU")
    return torch.device("cpu")


def _autocast(device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    """AMP context and grad scaler: bf16 where supported (no scaler needed), else fp16."""
    if device.type != "cuda":
        return nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def _optimizer(params: Any, train: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = train["optimizer"], float(train["lr"]), float(train["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(train["momentum"]),
                               nesterov=float(train["momentum"]) > 0)
    raise ValueError(f"unknown optimizer {name!r}")


@torch.inference_mode()
def predict_probs(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of every clip, in batches."""
    model.eval()
    amp, _ = _autocast(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)
        with amp:
            logits = model(xb)
        out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def validation_metrics(model: nn.Module, data: TrialData, device: torch.device) -> dict[str, float]:
    """Clip- and song-level accuracy, macro-F1 and loss on the validation songs."""
    probs = predict_probs(model, data.x_val, device)
    clip = classification_scores(data.y_val, probs, prefix="val_clip_")
    song_probs = song_level(probs, data.val_song, len(data.y_val_song))
    song = classification_scores(data.y_val_song, song_probs, prefix="val_song_")
    return {**clip, **song, "val_loss": clip["val_clip_loss"]}


def build(data: TrialData, model_name: str, model_params: dict[str, Any]) -> Standardized:
    """The network for a trial, wrapped with the training set's standardisation."""
    net = build_model(model_name, len(data.classes), data.input_shape, **model_params)
    return Standardized(net, data.mean, data.std)


def _class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """n / (k * count) per class, k the classes present: each class weighs the same in total."""
    counts = torch.bincount(y, minlength=n_classes).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(y) / (present * counts.clamp(min=1)), torch.zeros_like(counts))


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, device: torch.device, gen: torch.Generator, imbalance: str = "none",
                 n_classes: int | None = None) -> float:
    """One pass over the training clips.

    ``imbalance``: ``class_weight`` weighs the loss by inverse class frequency;
    ``balanced_sampling`` draws clips with replacement so that every class is drawn equally often.
    """
    model.train()
    amp, scaler = _autocast(device)
    n_classes = n_classes or int(y.max()) + 1
    weights = _class_weights(y, n_classes)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device) if imbalance == "class_weight" else None)
    if imbalance == "balanced_sampling":
        order = torch.multinomial(weights[y], len(y), replacement=True, generator=gen)
    else:
        order = torch.randperm(len(x), generator=gen)
    total, seen = 0.0, 0
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if len(idx) < 2:  # batch norm cannot train on a single clip
            continue
        xb = x[idx].to(device, non_blocking=True)
        yb = y[idx].to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = loss_fn(model(xb), yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


class Ensemble(nn.Module):
    """The mean class probabilities of several models (the k fold models of a cross-validated trial)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.probabilities = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=-1) for m in self.members]).mean(dim=0)
        return probs if self.probabilities else torch.log(probs.clamp(min=1e-7))


def _mean_metrics(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean over folds, with the spread of the objective-like song metrics."""
    out = {k: float(np.mean([m[k] for m in per_fold])) for k in per_fold[0]}
    if len(per_fold) > 1:
        for k in ("val_song_acc", "val_song_f1"):
            out[f"{k}_std"] = float(np.std([m[k] for m in per_fold]))
    return out


def train_trial(config: dict[str, Any], data: TrialData | list[TrialData], spec: dict[str, Any]) -> None:
    """Tune function trainable.

    With a list of :class:`TrialData` (k-fold cross-validation) one model per fold is trained in
    lockstep and every epoch reports the mean over the folds, so ASHA and the searcher compare
    trials on the cross-validated score.

    Args:
        config: the trial's flat hyperparameters (``train.lr``, ``model.depth``, ...).
        data: train/validation features (or one set per fold), shared through the object store.
        spec: fixed settings: ``model`` name, ``cpu``/``gpu`` shares, ``seed``, ``max_epochs``.
    """
    from ray import tune

    # Tune logs a line per saved checkpoint from every worker; the driver reports progress instead.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, int(spec["cpu"])))
    device = select_device(float(spec["gpu"]))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    folds = data if isinstance(data, list) else [data]
    train, params = split_params(config)
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    models = [build(d, spec["model"], params).to(device) for d in folds]
    opts = [_optimizer(m.parameters(), train) for m in models]
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # resumed after a failure or a restore: carry on where it stopped
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=False)
        for model, opt, m_state, o_state in zip(models, opts, state["models"], state["optimizers"]):
            model.load_state_dict(m_state)
            opt.load_state_dict(o_state)
        gen.set_state(state["generator"])
        start = int(state["epoch"])
    tensors = [_tensors(d, device) for d in folds]
    epochs = min(int(train["epochs"]), int(spec["max_epochs"]))
    for epoch in range(start, epochs):
        per_fold, losses = [], []
        for model, opt, d, (x, y) in zip(models, opts, folds, tensors):
            losses.append(_train_epoch(model, opt, x, y, int(train["batch_size"]), device, gen,
                                       train.get("imbalance", "none"), len(d.classes)))
            per_fold.append(validation_metrics(model, d, device))
        train_loss = float(np.mean(losses))
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch + 1}; "
                                     "lower train.lr or enable batch norm")
        metrics = {"epoch": epoch + 1, "train_loss": train_loss, **_mean_metrics(per_fold)}
        with tempfile.TemporaryDirectory() as d:
            torch.save({"models": [m.state_dict() for m in models], "optimizers": [o.state_dict() for o in opts],
                        "generator": gen.get_state(), "epoch": epoch + 1, "config": config},
                       os.path.join(d, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _tensors(data: TrialData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # The arrays are read-only views of the object store, shared by every trial on the node
    # without a copy; training only reads them, so torch's read-only warning does not apply.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(np.ascontiguousarray(data.x_train))
        y = torch.from_numpy(np.ascontiguousarray(data.y_train))
    if device.type == "cuda":  # pinned host memory makes the per-batch copies asynchronous
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def load_checkpoint_model(path: str, data: TrialData | list[TrialData], model_name: str,
                          config: dict[str, Any]) -> nn.Module:
    """Rebuild a trial's model from a checkpoint folder (on CPU): one model, or the fold ensemble."""
    _, params = split_params(config)
    folds = data if isinstance(data, list) else [data]
    state = torch.load(os.path.join(path, CHECKPOINT_FILE), map_location="cpu", weights_only=False)
    models = []
    for d, m_state in zip(folds, state["models"]):
        model = build(d, model_name, params)
        model.load_state_dict(m_state)
        models.append(model.eval())
    return models[0] if len(models) == 1 else Ensemble(models).eval()
