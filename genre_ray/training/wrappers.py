"""What a trial trains on and what it produces.

:class:`TrialData` is the train and validation clips a trial receives (never the test split);
:class:`Standardized`, :class:`Ensemble` and :class:`ClassicalModel` wrap a trained network, a
trial's fold models or fitted scikit-learn estimators behind one interface. A saved classifier
pickles these classes, so their module path is part of the saved format (see
:mod:`genre_ray._legacy` for the paths of models saved before the package moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from genre_ray.config import LEARNED_AGGREGATIONS
from genre_ray.training.aggregate import SequenceAggregator


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

