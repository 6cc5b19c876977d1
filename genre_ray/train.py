"""The Ray Tune trainable: build a model from the registry, train, report every epoch.

The features of the train and validation songs reach every trial through the object store
once (``tune.with_parameters``); a trial never reads the cache or the audio. The test songs
are not in what a trial receives at all.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from genre_ray.aggregate import SequenceAggregator, songs_of
from genre_ray.augment import Augment
from genre_ray.config import LEARNED_AGGREGATIONS, METRICS
from genre_ray.evaluate import classification_scores, song_level
from genre_ray.models import build_model
from genre_ray.spaces import TrialPlan, resolve

__all__ = ["AmpPolicy", "BareReporter", "ClassicalModel", "Ensemble", "Precision", "Reporter", "Standardized",
           "TrialData", "TuneReporter", "amp_policy", "fold_models", "load_checkpoint_model", "predict_probs", "run_trial",
           "select_device", "set_threads", "song_probabilities", "threads_for", "train_trial", "trial_spec"]

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

    mean: torch.Tensor
    std: torch.Tensor
    net: Any  # a registry model: ``forward``, ``embed`` and a linear ``head``

    def __init__(self, net: Any, mean: np.ndarray, std: np.ndarray, probabilities: bool = False,
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
    """CUDA when the trial asked for a GPU share and one is visible, else CPU (with a warning).

    Ray gives a trial with ``resources.gpu`` > 0 its card through ``CUDA_VISIBLE_DEVICES``, so
    ``cuda`` is that card. A fractional share (0.25: four trials on a card) also caps this
    process's share of the card's memory: Ray schedules by share but does not enforce it.
    """
    if gpu > 0 and torch.cuda.is_available():
        if gpu < 1:
            torch.cuda.set_per_process_memory_fraction(float(gpu))
        log.info("training on CUDA (GPU share %g, CUDA_VISIBLE_DEVICES=%s)", gpu,
                 os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        return torch.device("cuda")
    if gpu > 0:
        log.warning("a GPU was requested but none is visible to this trial; training on CPU")
    return torch.device("cpu")


def threads_for(cpu: float) -> int:
    """Torch threads for a CPU share: its whole CPUs, at least one (0.5 -> 1, 2 -> 2, 2.5 -> 2)."""
    return max(1, int(cpu))


_INTEROP_THREADS: int | None = None  # set once per process; Tune reuses a trial's actor for the next


def set_threads(cpu: float) -> int:
    """Size torch's intra-op and inter-op thread pools to the trial's CPU share.

    The intra-op count can change at any time. The inter-op pool can be sized only once per
    process and only before it is first used; a reused actor keeps the first trial's size
    (every trial of a search has the same share), and a process that already used it keeps
    torch's default.

    Returns:
        The intra-op thread count.
    """
    global _INTEROP_THREADS
    n = threads_for(cpu)
    torch.set_num_threads(n)
    if _INTEROP_THREADS is None:
        try:
            torch.set_num_interop_threads(n)
            _INTEROP_THREADS = n
        except RuntimeError as exc:  # this process already started its inter-op pool
            _INTEROP_THREADS = -1
            log.debug("inter-op threads left as they are: %s", exc)
    return n


@dataclass(frozen=True)
class AmpPolicy:
    """Mixed precision of a device: the autocast dtype (None: full precision) and whether the
    loss needs a grad scaler (fp16 gradients underflow without one; bf16 has fp32's range)."""

    dtype: torch.dtype | None
    scaler: bool


def amp_policy(device_type: str, bf16_supported: bool) -> AmpPolicy:
    """bf16 on a CUDA card that has it natively, fp16 with a grad scaler on older cards, none on CPU."""
    if device_type != "cuda":
        return AmpPolicy(None, False)
    if bf16_supported:
        return AmpPolicy(torch.bfloat16, False)
    return AmpPolicy(torch.float16, True)


def _bf16_supported(device: torch.device) -> bool:
    # Emulated bf16 (pre-Ampere cards) is slower than fp16 with a scaler.
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


class Precision:
    """A model's mixed precision: the autocast context and, for fp16, its grad scaler.

    One per model for the whole trial, so the scaler's loss scale carries over from epoch to epoch
    (and through a checkpoint).

    Args:
        device: where the model trains.
        bf16: whether the card has native bf16 (None: ask it).
    """

    def __init__(self, device: torch.device, bf16: bool | None = None) -> None:
        self.device_type = device.type
        self.policy = amp_policy(device.type, _bf16_supported(device) if bf16 is None else bf16)
        self.scaler = torch.amp.GradScaler(device.type) if self.policy.scaler else None

    def autocast(self) -> AbstractContextManager[Any]:
        if self.policy.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.policy.dtype)

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step, through the scaler when there is one."""
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def _autocast(device: torch.device) -> AbstractContextManager[Any]:
    """The inference autocast of a device (no scaler: nothing is backpropagated)."""
    policy = amp_policy(device.type, _bf16_supported(device))
    return nullcontext() if policy.dtype is None else torch.autocast(device.type, dtype=policy.dtype)


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
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max" if mode == "max" else "min",
                                                             factor=0.5, patience=1)
        return plateau, "metric"
    return None, "never"


@torch.inference_mode()
def predict_probs(model: nn.Module | ClassicalModel, x: np.ndarray, device: torch.device,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities of every clip, in batches."""
    if isinstance(model, ClassicalModel):
        return model.predict_proba(x)
    model.eval()
    amp = _autocast(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)
        with amp:
            logits = model(xb)
        probs = logits.float()
        if not getattr(model, "probabilities", False):
            probs = torch.softmax(probs, dim=-1)
        out.append(probs.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def _embeddings(model: Standardized, x: np.ndarray | torch.Tensor, device: torch.device,
                batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = [model.embed(torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)).float()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def song_probabilities(model: nn.Module | ClassicalModel, x: np.ndarray, clip_song: np.ndarray, n_songs: int,
                       device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(clip probabilities, song probabilities)`` with the model's own clip -> song aggregation."""
    clip = predict_probs(model, x, device)
    members: list[Any] = list(model.members) if isinstance(model, Ensemble) else [model]
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


def validation_metrics(model: nn.Module | ClassicalModel, data: TrialData,
                       device: torch.device) -> dict[str, float]:
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
    mean, std = data.mean, data.std
    if getattr(net, "raw_input", False):  # a pretrained backbone normalises its own input
        mean, std = np.zeros_like(mean), np.ones_like(std)
    return Standardized(net, mean, std, aggregation=plan.train.get("aggregation", "mean"),
                        n_classes=len(data.classes))


def _class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """n / (k * count) per class, k the classes present: each class weighs the same in total."""
    counts = torch.bincount(y, minlength=n_classes).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(y) / (present * counts.clamp(min=1)), torch.zeros_like(counts))


def _batches(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch (a last batch of one clip is skipped: batch norm cannot train on it)."""
    return sum(1 for i in range(0, n, batch_size) if min(batch_size, n - i) >= 2)


def _batch(t: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` of a host tensor, on ``device``.

    On CUDA the rows are gathered straight into pinned memory (torch's caching host allocator
    recycles it once the copy is done) and copied asynchronously: a gather from a pinned tensor
    (``t[idx]``) would give pageable memory, and its copy would block.
    """
    if device.type != "cuda":
        return t[idx]
    staged = torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    torch.index_select(t, 0, idx, out=staged)
    return staged.to(device, non_blocking=True)


def _train_epoch(model: Standardized, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, device: torch.device, gen: torch.Generator, imbalance: str = "none",
                 n_classes: int | None = None, augment: Augment | None = None, label_smoothing: float = 0.0,
                 scheduler: Any = None, precision: Precision | None = None) -> float:
    """One pass over the training clips (``x`` and ``y`` on the host; batches go to ``device``).

    ``imbalance``: ``class_weight`` weighs the loss by inverse class frequency;
    ``balanced_sampling`` draws clips with replacement so that every class is drawn equally often.
    ``scheduler`` is stepped after every batch (one-cycle). ``precision``: the model's AMP and
    grad scaler, kept across epochs (None: the device's, with a fresh scaler).
    """
    model.train()
    precision = precision or Precision(device)
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
        xb, yb = _batch(x, idx, device), _batch(y, idx, device)
        if augment is not None:
            xb = augment.raw(xb, gen)
        xb = model.normalize(xb)
        target = yb
        if augment is not None:
            xb, target = augment.standardized(xb, yb, n_classes, gen)
        opt.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_fn(model.net(xb), target)
        precision.backward_step(loss, opt)
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

    def __init__(self, members: Sequence[nn.Module]) -> None:
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


def fold_models(model: nn.Module | ClassicalModel, n_folds: int) -> list[Any]:
    """The per-fold models of a trial's model (its fold ensemble, or its estimators), in fold order."""
    if isinstance(model, Ensemble):
        members: list[Any] = list(model.members)
    elif isinstance(model, ClassicalModel):
        members = [ClassicalModel([e], model.n_classes, model.aggregation) for e in model.estimators]
    else:
        members = [model]
    if len(members) != n_folds:
        raise ValueError(f"the model holds {len(members)} fold models, the trial data {n_folds} folds")
    return members


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


def _train_classical(plan: TrialPlan, folds: list[TrialData], spec: dict[str, Any],
                     reporter: Reporter) -> None:
    """A classical trial: one fit per fold, one report (one "epoch"), a pickled checkpoint."""
    import joblib

    estimators, per_fold = [], []
    for d in folds:
        est = _fit_classical(plan, d, spec["seed"])
        model = ClassicalModel([est], len(d.classes), plan.train.get("aggregation", "mean"))
        estimators.append(est)
        per_fold.append(validation_metrics(model, d, torch.device("cpu")))
    metrics = {"epoch": 1, "planned_epochs": 1, **_mean_metrics(per_fold)}
    reporter.report(metrics, lambda d: joblib.dump({"estimators": estimators, "config": plan},
                                                   os.path.join(d, CLASSICAL_FILE)))


class Reporter(Protocol):
    """Where a trial's epochs go: Tune (:class:`TuneReporter`) or nowhere (:class:`BareReporter`)."""

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        """The folder of the checkpoint to resume from, or None."""

    def report(self, metrics: dict[str, Any], save: Callable[[str], None]) -> None:
        """Report one epoch; ``save(folder)`` writes its checkpoint when the reporter keeps one."""


class TuneReporter:
    """The trial runs in Tune: ``tune.report`` with a checkpoint every epoch, resume from Tune's."""

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else nullcontext(None)

    def report(self, metrics: dict[str, Any], save: Callable[[str], None]) -> None:
        import ray
        from ray import tune

        # The node is reported so that the leaderboard's trials can be traced to their machines.
        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        with tempfile.TemporaryDirectory() as d:
            save(d)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


@dataclass
class BareReporter:
    """The same trial without Tune (benchmarks): keeps each epoch's metrics and end time
    (``time.perf_counter``); writes a checkpoint only with ``checkpoints=True``."""

    checkpoints: bool = False
    metrics: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        return nullcontext(None)

    def report(self, metrics: dict[str, Any], save: Callable[[str], None]) -> None:
        if self.checkpoints:
            with tempfile.TemporaryDirectory() as d:
                save(d)
        self.metrics.append(dict(metrics))
        self.times.append(time.perf_counter())


def trial_spec(cfg: Any, groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fixed settings every trial of a search gets beside its config (``spec`` of :func:`run_trial`)."""
    s, res = cfg.search, cfg.resources
    return {"cpu": res["cpu"], "gpu": res["gpu"], "seed": cfg.train["seed"], "max_epochs": s["max_epochs"],
            "metric": s["metric"], "groups": groups or {}}


def train_trial(config: dict[str, Any], data: dict[str, TrialData | list[TrialData]],
                spec: dict[str, Any]) -> None:
    """Tune function trainable: :func:`run_trial` reporting to Tune."""
    # Tune logs a line per saved checkpoint from every worker; the driver reports progress instead.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    run_trial(config, data, spec, TuneReporter())


def run_trial(config: dict[str, Any], data: dict[str, TrialData | list[TrialData]], spec: dict[str, Any],
              reporter: Reporter) -> None:
    """One trial, in Tune or bare: train, report and checkpoint every epoch.

    With a list of :class:`TrialData` (k-fold cross-validation) one model per fold is trained in
    lockstep and every epoch reports the mean over the folds, so ASHA and the searcher compare
    trials on the cross-validated score. A trial ends early when its objective has not improved
    for ``train.patience`` epochs (0: never), besides ASHA's stops.

    Args:
        config: the trial's flat hyperparameters (``model.name``, ``features.kind``, ``train.lr``, ...).
        data: feature kind -> train/validation features (or one set per fold), shared through the
            object store; the trial uses the kind its config names.
        spec: fixed settings (:func:`trial_spec`): ``cpu``/``gpu`` shares, ``seed``, ``max_epochs``,
            ``metric``, ``groups``.
        reporter: where epochs are reported and checkpoints go.
    """
    set_threads(float(spec["cpu"]))
    plan = resolve(config)
    chosen = data[plan.kind]
    folds = chosen if isinstance(chosen, list) else [chosen]
    torch.manual_seed(spec["seed"])
    if plan.classical:
        _train_classical(plan, folds, spec, reporter)
        return
    device = select_device(float(spec["gpu"]))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed clip shapes: the fastest kernels, found once
    fit = _Fit.build(plan, folds, spec, device)
    with reporter.checkpoint_dir() as d:
        if d is not None:  # resumed after a failure or a restore: carry on where it stopped
            fit.load(torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=False))
    tensors = [_tensors(d) for d in folds]
    restored_from = fit.epoch  # > 0: resumed from a checkpoint (a lost node, a failure, --resume)
    while fit.epoch < fit.epochs:
        metrics = {**fit.train_epoch(tensors), "restored_from_epoch": restored_from}
        reporter.report(metrics, lambda d: torch.save(fit.state(config), os.path.join(d, CHECKPOINT_FILE)))
        if metrics.get("stopped_by_patience"):
            return


@dataclass
class _Fit:
    """The models of one neural trial (one per fold), their optimizers, schedules and progress."""

    plan: TrialPlan
    folds: list[TrialData]
    device: torch.device
    metric: str
    epochs: int
    models: list[Standardized]
    opts: list[torch.optim.Optimizer]
    agg_opts: list[torch.optim.Optimizer | None]
    scheds: list[tuple[Any, str]]
    precisions: list[Precision]
    gen: torch.Generator
    epoch: int = 0
    best: float | None = None
    since_best: int = 0

    @classmethod
    def build(cls, plan: TrialPlan, folds: list[TrialData], spec: dict[str, Any],
              device: torch.device) -> _Fit:
        train, metric = plan.train, spec.get("metric", "val_song_acc")
        epochs = min(int(train["epochs"]), int(spec["max_epochs"]))
        models = [build(d, plan, spec.get("groups")).to(device) for d in folds]
        opts = [_optimizer(m.net.parameters(), train) for m in models]
        agg_opts: list[torch.optim.Optimizer | None] = [
            torch.optim.Adam(m.aggregator.parameters(), lr=1e-3) if m.aggregator is not None else None
            for m in models]
        steps = [_batches(len(d.x_train), int(train["batch_size"])) for d in folds]
        scheds = [_scheduler(o, train, epochs, n, METRICS[metric]) for o, n in zip(opts, steps, strict=True)]
        return cls(plan, folds, device, metric, epochs, models, opts, agg_opts, scheds,
                   [Precision(device) for _ in models], torch.Generator().manual_seed(spec["seed"]))

    def state(self, config: dict[str, Any]) -> dict[str, Any]:
        """Everything a resumed trial needs (the checkpoint's ``model.pt``)."""
        return {"models": [m.state_dict() for m in self.models],
                "optimizers": [o.state_dict() for o in self.opts],
                "agg_optimizers": [o.state_dict() if o is not None else None for o in self.agg_opts],
                "schedulers": [s.state_dict() if s is not None else None for s, _ in self.scheds],
                "scalers": [p.scaler.state_dict() if p.scaler is not None else None for p in self.precisions],
                "generator": self.gen.get_state(), "epoch": self.epoch, "best": self.best,
                "since_best": self.since_best, "config": config}

    def load(self, state: dict[str, Any]) -> None:
        scalers = state.get("scalers") or [None] * len(self.models)  # none in checkpoints before AMP scalers
        for i, model in enumerate(self.models):
            model.load_state_dict(state["models"][i])
            self.opts[i].load_state_dict(state["optimizers"][i])
            agg_opt, (sched, _), scaler = self.agg_opts[i], self.scheds[i], self.precisions[i].scaler
            if agg_opt is not None:
                agg_opt.load_state_dict(state["agg_optimizers"][i])
            if sched is not None:
                sched.load_state_dict(state["schedulers"][i])
            if scaler is not None and scalers[i] is not None:
                scaler.load_state_dict(scalers[i])
        self.gen.set_state(state["generator"])
        self.epoch, self.best = int(state["epoch"]), state.get("best")
        self.since_best = int(state.get("since_best", 0))

    def train_epoch(self, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        """One epoch of every fold's model; returns the epoch's metrics (mean over the folds)."""
        train, mode = self.plan.train, METRICS[self.metric]
        augment = Augment.from_train(train, self.plan.kind)
        per_fold, losses = [], []
        for model, opt, agg_opt, (sched, when), prec, d, (x, y) in zip(
                self.models, self.opts, self.agg_opts, self.scheds, self.precisions, self.folds, tensors,
                strict=True):
            losses.append(_train_epoch(model, opt, x, y, int(train["batch_size"]), self.device, self.gen,
                                       train.get("imbalance", "none"), len(d.classes), augment,
                                       float(train.get("label_smoothing", 0.0)),
                                       sched if when == "batch" else None, prec))
            if agg_opt is not None:
                _train_aggregator(model, agg_opt, d, x, self.device, self.gen)
            per_fold.append(validation_metrics(model, d, self.device))
            if when == "epoch":
                sched.step()
            elif when == "metric":
                sched.step(per_fold[-1][self.metric])
        self.epoch += 1
        train_loss = float(np.mean(losses))
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {self.epoch}; "
                                     "lower train.lr or enable batch norm")
        metrics = {"epoch": self.epoch, "planned_epochs": self.epochs, "train_loss": train_loss,
                   "lr": float(self.opts[0].param_groups[0]["lr"]), **_mean_metrics(per_fold)}
        value = metrics[self.metric]
        if self.best is None or (value > self.best if mode == "max" else value < self.best):
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        patience = int(train.get("patience", 0) or 0)
        if patience > 0 and self.since_best >= patience and self.epoch < self.epochs:
            metrics["stopped_by_patience"] = 1
        return metrics


def refit(config: dict[str, Any], data: TrialData, epochs: int, spec: dict[str, Any],
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Train a trial's configuration afresh on ``data`` (every non-test song) for ``epochs`` epochs.

    The same model, features, optimizer, schedule and augmentation as the trial, with the schedule
    spanning ``epochs`` (the epoch at which the trial's validation score peaked) and no patience stop:
    there is no held-out song left to watch. A classical model is fitted once.

    Args:
        config: the trial's flat config.
        data: the training clips of all non-test songs (its validation part is only reported).
        epochs: epochs to train a neural model.
        spec: as for :func:`run_trial` (``gpu`` share, ``seed``, ``groups``, ``metric``).
        on_epoch: called with each epoch's metrics (the tracked refit run's curves).

    Returns:
        The refitted model on the CPU, in eval mode: a :class:`Standardized` or :class:`ClassicalModel`.
    """
    plan = resolve(config)
    torch.manual_seed(spec["seed"])
    if plan.classical:
        est = _fit_classical(plan, data, spec["seed"])
        return ClassicalModel([est], len(data.classes), plan.train.get("aggregation", "mean"))
    plan = TrialPlan(plan.model, plan.kind, plan.params, {**plan.train, "epochs": int(epochs), "patience": 0})
    device = select_device(float(spec.get("gpu", 0.0)))
    fit = _Fit.build(plan, [data], {**spec, "max_epochs": int(epochs)}, device)
    tensors = [_tensors(data)]
    while fit.epoch < fit.epochs:
        metrics = fit.train_epoch(tensors)
        if on_epoch is not None:
            on_epoch(metrics)
    return fit.models[0].to("cpu").eval()


def _tensors(data: TrialData) -> tuple[torch.Tensor, torch.Tensor]:
    """The training clips as host tensors, without a copy.

    The arrays are read-only views of the object store, shared by every trial on the node;
    training only reads them (batches are gathered into new tensors, :func:`_batch`), so torch's
    read-only warning does not apply. Pinning them whole would copy them into every trial's
    process; on CUDA each batch is gathered into pinned memory instead.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(np.ascontiguousarray(data.x_train))
        y = torch.from_numpy(np.ascontiguousarray(data.y_train))
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
        return ClassicalModel(state["estimators"], len(folds[0].classes),
                              plan.train.get("aggregation", "mean"))
    state = torch.load(os.path.join(path, CHECKPOINT_FILE), map_location="cpu", weights_only=False)
    models = []
    for d, m_state in zip(folds, state["models"], strict=True):
        model = build(d, plan, groups)
        model.load_state_dict(m_state)
        models.append(model.eval())
    return models[0] if len(models) == 1 else Ensemble(models).eval()
