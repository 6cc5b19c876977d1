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

from genre_ray.aggregate import SequenceAggregator, songs_of
from genre_ray.augment import Augment
from genre_ray.config import LEARNED_AGGREGATIONS, METRICS
from genre_ray.evaluate import classification_scores, song_level
from genre_ray.models import build_model
from genre_ray.spaces import TrialPlan, resolve

__all__ = ["ClassicalModel", "Ensemble", "Standardized", "TrialData", "load_checkpoint_model", "predict_probs",
           "select_device", "song_probabilities", "train_trial"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"
CLASSICAL_FILE = "estimators.joblib"


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
    train_song: np.ndarray | None = None  # (n,) song index of each training clip (learned aggregation)
    y_train_song: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class Standardized(nn.Module):
    """Per-bin standardisation in front of a network, so a saved model is self-contained.

    It also carries the trial's clip -> song aggregation: ``mean``, ``vote`` or ``max`` of the
    clip probabilities, or a learned ``gru``/``lstm`` :class:`SequenceAggregator` over the
    network's clip embeddings (``self.aggregator``, saved with the weights).

    With ``probabilities=True`` the output is softmax probabilities instead of logits: the form
    a registered model serves.
    """

    def __init__(self, net: nn.Module, mean: np.ndarray, std: np.ndarray, probabilities: bool = False,
                 aggregation: str = "mean", n_classes: int | None = None) -> None:
        super().__init__()
        self.net = net
        # Shaped to broadcast over one example: (bins, 1) for clips, (features,) for vectors.
        self.register_buffer("mean", torch.tensor(np.array(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.array(std), dtype=torch.float32))
        self.probabilities = probabilities
        self.aggregation = aggregation
        self.aggregator: SequenceAggregator | None = None
        if aggregation in LEARNED_AGGREGATIONS:
            self.aggregator = SequenceAggregator(aggregation, net.head.in_features, n_classes or
                                                 net.head.out_features)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The network's clip embedding (what the learned aggregator reads)."""
        return self.net.embed(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.normalize(x))
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


def _scheduler(opt: torch.optim.Optimizer, train: dict[str, Any], epochs: int, steps_per_epoch: int,
               mode: str) -> tuple[Any, str]:
    """The learning-rate schedule and when it steps: ``batch``, ``epoch``, ``metric`` or ``never``."""
    name = train.get("schedule", "none")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)), "epoch"
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(train["lr"]),
                                                   total_steps=max(1, epochs * steps_per_epoch)), "batch"
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=1), "metric"
    return None, "never"


@torch.inference_mode()
def predict_probs(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of every clip, in batches."""
    if isinstance(model, ClassicalModel):
        return model.predict_proba(x)
    model.eval()
    amp, _ = _autocast(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)
        with amp:
            logits = model(xb)
        probs = logits.float() if getattr(model, "probabilities", False) else torch.softmax(logits.float(), dim=-1)
        out.append(probs.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def _embeddings(model: Standardized, x: np.ndarray | torch.Tensor, device: torch.device,
                batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = [model.embed(torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)).float()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def song_probabilities(model: nn.Module, x: np.ndarray, clip_song: np.ndarray, n_songs: int,
                       device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(clip probabilities, song probabilities)`` with the model's own clip -> song aggregation."""
    clip = predict_probs(model, x, device)
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    songs = []
    for m in members:
        if getattr(m, "aggregator", None) is not None:
            with torch.inference_mode():
                logits = m.aggregator(songs_of(_embeddings(m, x, device), clip_song, n_songs))
            songs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        else:
            probs = clip if len(members) == 1 else predict_probs(m, x, device)
            songs.append(song_level(probs, clip_song, n_songs, getattr(m, "aggregation", "mean")))
    return clip, np.mean(songs, axis=0)


def validation_metrics(model: nn.Module, data: TrialData, device: torch.device) -> dict[str, float]:
    """Clip- and song-level accuracy, macro-F1 and loss on the validation songs."""
    probs, song_probs = song_probabilities(model, data.x_val, data.val_song, len(data.y_val_song), device)
    clip = classification_scores(data.y_val, probs, prefix="val_clip_")
    song = classification_scores(data.y_val_song, song_probs, prefix="val_song_")
    return {**clip, **song, "val_loss": clip["val_clip_loss"]}


def build(data: TrialData, plan: TrialPlan, groups: dict[str, Any] | None = None) -> Standardized:
    """The network for a trial, wrapped with the training set's standardisation and aggregation."""
    params = dict(plan.params)
    if plan.model == "combined":  # its branches split the stacked rows into their feature groups
        params["groups"] = tuple((groups or {}).get(plan.kind) or ()) or None
    net = build_model(plan.model, len(data.classes), data.input_shape, **params)
    return Standardized(net, data.mean, data.std, aggregation=plan.train.get("aggregation", "mean"),
                        n_classes=len(data.classes))


def _class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """n / (k * count) per class, k the classes present: each class weighs the same in total."""
    counts = torch.bincount(y, minlength=n_classes).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(y) / (present * counts.clamp(min=1)), torch.zeros_like(counts))


def _batches(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch (a last batch of one clip is skipped: batch norm cannot train on it)."""
    return sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= 2)


def _train_epoch(model: Standardized, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, device: torch.device, gen: torch.Generator, imbalance: str = "none",
                 n_classes: int | None = None, augment: Augment | None = None, label_smoothing: float = 0.0,
                 scheduler: Any = None) -> float:
    """One pass over the training clips.

    ``imbalance``: ``class_weight`` weighs the loss by inverse class frequency;
    ``balanced_sampling`` draws clips with replacement so that every class is drawn equally often.
    ``scheduler`` is stepped after every batch (one-cycle).
    """
    model.train()
    amp, scaler = _autocast(device)
    n_classes = n_classes or int(y.max()) + 1
    weights = _class_weights(y, n_classes)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device) if imbalance == "class_weight" else None,
                                  label_smoothing=float(label_smoothing))
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
        if augment is not None:
            xb = augment.raw(xb, gen)
        xb = model.normalize(xb)
        target = yb
        if augment is not None:
            xb, target = augment.standardized(xb, yb, n_classes, gen)
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = loss_fn(model.net(xb), target)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


def _train_aggregator(model: Standardized, opt: torch.optim.Optimizer, data: TrialData, x: torch.Tensor,
                      device: torch.device, gen: torch.Generator, songs_per_batch: int = 16) -> float:
    """One pass of the learned aggregator over the training songs, the clip network frozen."""
    assert model.aggregator is not None and data.train_song is not None and data.y_train_song is not None
    emb = _embeddings(model, x, device)
    songs = songs_of(emb, data.train_song, len(data.y_train_song))
    y = torch.as_tensor(data.y_train_song, device=device)
    model.aggregator.train()
    order = torch.randperm(len(songs), generator=gen).tolist()
    total = 0.0
    for i in range(0, len(order), songs_per_batch):
        idx = order[i:i + songs_per_batch]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model.aggregator([songs[j] for j in idx]), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / max(len(songs), 1)


class Ensemble(nn.Module):
    """The mean class probabilities of several models (the k fold models of a cross-validated trial)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.probabilities = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x).float(), dim=-1) for m in self.members]).mean(dim=0)
        return probs if self.probabilities else torch.log(probs.clamp(min=1e-7))


class ClassicalModel:
    """Fitted scikit-learn estimators (one per fold) behind the interface of the neural models.

    ``predict_proba`` averages the fold estimators' probabilities over all classes; the song
    aggregation is ``mean``, ``vote`` or ``max``.
    """

    def __init__(self, estimators: list[Any], n_classes: int, aggregation: str = "mean") -> None:
        self.estimators = estimators
        self.n_classes = n_classes
        self.aggregation = aggregation
        self.probabilities = True

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        from genre_ray.models.classical import class_probabilities

        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        return np.mean([class_probabilities(e, flat, self.n_classes) for e in self.estimators], axis=0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)


def _mean_metrics(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean over folds, with the spread of the objective-like song metrics."""
    out = {k: float(np.mean([m[k] for m in per_fold])) for k in per_fold[0]}
    if len(per_fold) > 1:
        for k in ("val_song_acc", "val_song_f1"):
            out[f"{k}_std"] = float(np.std([m[k] for m in per_fold]))
    return out


def _fit_classical(plan: TrialPlan, d: TrialData, seed: int) -> Any:
    """Fit one classical estimator on a fold's training clips (class weights as sample weights)."""
    from genre_ray.models.classical import fit_estimator

    x = d.x_train.reshape(len(d.x_train), -1)
    return fit_estimator(build_model(plan.model, len(d.classes), d.input_shape, seed=seed, **plan.params), x,
                         d.y_train, plan.train.get("imbalance", "none"), seed)


def _train_classical(plan: TrialPlan, folds: list[TrialData], spec: dict[str, Any]) -> None:
    """A classical trial: one fit per fold, one report (one "epoch"), a pickled checkpoint."""
    import joblib
    from ray import tune

    estimators, per_fold = [], []
    for d in folds:
        est = _fit_classical(plan, d, spec["seed"])
        model = ClassicalModel([est], len(d.classes), plan.train.get("aggregation", "mean"))
        estimators.append(est)
        per_fold.append(validation_metrics(model, d, torch.device("cpu")))
    metrics = {"epoch": 1, "planned_epochs": 1, **_mean_metrics(per_fold)}
    with tempfile.TemporaryDirectory() as d:
        joblib.dump({"estimators": estimators, "config": plan}, os.path.join(d, CLASSICAL_FILE))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def train_trial(config: dict[str, Any], data: dict[str, TrialData | list[TrialData]], spec: dict[str, Any]) -> None:
    """Tune function trainable.

    With a list of :class:`TrialData` (k-fold cross-validation) one model per fold is trained in
    lockstep and every epoch reports the mean over the folds, so ASHA and the searcher compare
    trials on the cross-validated score. A trial ends early when its objective has not improved
    for ``train.patience`` epochs (0: never), besides ASHA's stops.

    Args:
        config: the trial's flat hyperparameters (``model.name``, ``features.kind``, ``train.lr``, ...).
        data: feature kind -> train/validation features (or one set per fold), shared through the
            object store; the trial uses the kind its config names.
        spec: fixed settings: ``cpu``/``gpu`` shares, ``seed``, ``max_epochs``, ``metric``, ``groups``.
    """
    from ray import tune

    # Tune logs a line per saved checkpoint from every worker; the driver reports progress instead.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, int(spec["cpu"])))
    plan = resolve(config)
    chosen = data[plan.kind]
    folds = chosen if isinstance(chosen, list) else [chosen]
    torch.manual_seed(spec["seed"])
    if plan.classical:
        _train_classical(plan, folds, spec)
        return
    device = select_device(float(spec["gpu"]))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train = plan.train
    gen = torch.Generator().manual_seed(spec["seed"])
    metric = spec.get("metric", "val_song_acc")
    mode = METRICS[metric]
    epochs = min(int(train["epochs"]), int(spec["max_epochs"]))
    batch_size = int(train["batch_size"])
    models = [build(d, plan, spec.get("groups")).to(device) for d in folds]
    opts = [_optimizer(m.net.parameters(), train) for m in models]
    agg_opts = [torch.optim.Adam(m.aggregator.parameters(), lr=1e-3) if m.aggregator is not None else None
                for m in models]
    scheds = [_scheduler(o, train, epochs, _batches(len(d.x_train), batch_size), mode) for o, d in zip(opts, folds)]
    start, best, since_best = 0, None, 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # resumed after a failure or a restore: carry on where it stopped
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=False)
        for i, model in enumerate(models):
            model.load_state_dict(state["models"][i])
            opts[i].load_state_dict(state["optimizers"][i])
            if agg_opts[i] is not None:
                agg_opts[i].load_state_dict(state["agg_optimizers"][i])
            if scheds[i][0] is not None:
                scheds[i][0].load_state_dict(state["schedulers"][i])
        gen.set_state(state["generator"])
        start, best, since_best = int(state["epoch"]), state.get("best"), int(state.get("since_best", 0))
    tensors = [_tensors(d, device) for d in folds]
    augment = Augment.from_train(train, plan.kind)
    patience = int(train.get("patience", 0) or 0)
    for epoch in range(start, epochs):
        per_fold, losses = [], []
        for model, opt, agg_opt, (sched, when), d, (x, y) in zip(models, opts, agg_opts, scheds, folds, tensors):
            losses.append(_train_epoch(model, opt, x, y, batch_size, device, gen, train.get("imbalance", "none"),
                                       len(d.classes), augment, float(train.get("label_smoothing", 0.0)),
                                       sched if when == "batch" else None))
            if agg_opt is not None:
                _train_aggregator(model, agg_opt, d, x, device, gen)
            per_fold.append(validation_metrics(model, d, device))
            if when == "epoch":
                sched.step()
            elif when == "metric":
                sched.step(per_fold[-1][metric])
        train_loss = float(np.mean(losses))
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch + 1}; "
                                     "lower train.lr or enable batch norm")
        metrics = {"epoch": epoch + 1, "planned_epochs": epochs, "train_loss": train_loss,
                   "lr": float(opts[0].param_groups[0]["lr"]), **_mean_metrics(per_fold)}
        value = metrics[metric]
        if best is None or (value > best if mode == "max" else value < best):
            best, since_best = value, 0
        else:
            since_best += 1
        stop = patience > 0 and since_best >= patience and epoch + 1 < epochs
        if stop:
            metrics["stopped_by_patience"] = 1
        with tempfile.TemporaryDirectory() as d:
            torch.save({"models": [m.state_dict() for m in models], "optimizers": [o.state_dict() for o in opts],
                        "agg_optimizers": [o.state_dict() if o is not None else None for o in agg_opts],
                        "schedulers": [s.state_dict() if s is not None else None for s, _ in scheds],
                        "generator": gen.get_state(), "epoch": epoch + 1, "best": best, "since_best": since_best,
                        "config": config}, os.path.join(d, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        if stop:
            return


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


def load_checkpoint_model(path: str, data: TrialData | list[TrialData], config: dict[str, Any],
                          groups: dict[str, Any] | None = None) -> Any:
    """Rebuild a trial's model from a checkpoint folder (on CPU): one model, the fold ensemble, or
    the fitted classical estimators."""
    plan = resolve(config)
    folds = data if isinstance(data, list) else [data]
    if plan.classical:
        import joblib

        state = joblib.load(os.path.join(path, CLASSICAL_FILE))
        return ClassicalModel(state["estimators"], len(folds[0].classes), plan.train.get("aggregation", "mean"))
    state = torch.load(os.path.join(path, CHECKPOINT_FILE), map_location="cpu", weights_only=False)
    models = []
    for d, m_state in zip(folds, state["models"]):
        model = build(d, plan, groups)
        model.load_state_dict(m_state)
        models.append(model.eval())
    return models[0] if len(models) == 1 else Ensemble(models).eval()
