"""The training loop: build a model from the registry, train it (per fold), report every epoch.

One loop serves Tune (:mod:`genre_ray.training.trainable` passes a Tune reporter) and plain
callers (:class:`BareReporter`: benchmarks, the refit). Classical models are fitted here too.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from genre_ray._legacy import old_module_paths
from genre_ray.config import METRICS
from genre_ray.config.spaces import TrialPlan, resolve
from genre_ray.models import build_model, entries, register
from genre_ray.training.aggregate import songs_of
from genre_ray.training.augment import Augment
from genre_ray.training.device import Precision, select_device, set_threads
from genre_ray.training.inference import clip_embeddings, validation_metrics
from genre_ray.training.wrappers import ClassicalModel, Ensemble, Standardized, TrialData

CHECKPOINT_FILE = "model.pt"


CLASSICAL_FILE = "estimators.joblib"


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


def build(data: TrialData, plan: TrialPlan, groups: dict[str, Any] | None = None) -> Standardized:
    """The network for a trial, wrapped with the training set's standardisation and aggregation."""
    # what the data tells a model beyond its shape; each model takes those its spec declares
    data_inputs = {"groups": tuple((groups or {}).get(plan.kind) or ()) or None}
    net = build_model(plan.model, len(data.classes), data.input_shape, data_inputs, **plan.params)
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
    emb = clip_embeddings(model, x, device)
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
    added = entries(cfg.model_names)  # models registered outside the package: the trials register them too
    return {"cpu": res.cpu, "gpu": res.gpu, "seed": cfg.train.seed, "max_epochs": s.max_epochs,
            "metric": s.metric, "groups": groups or {}, **({"models": added} if added else {})}


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
            ``metric``, ``groups`` and, for models registered outside the package, ``models``.
        reporter: where epochs are reported and checkpoints go.
    """
    set_threads(float(spec["cpu"]))
    register(spec.get("models", {}))
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

        with old_module_paths():  # a checkpoint of a search started before the package moved
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

