"""A multi-layer perceptron on feature vectors: table rows, song statistics, or flattened clips.

The classical baseline of the GTZAN feature-table projects (an MLP on the Kaggle
``features_30_sec.csv`` columns) and of the "mean and covariance of features" student model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genre_ray.models.spec import DROPOUT, FLAG, Int, model_spec

__all__ = ["MLP"]


@model_spec(inputs=("vector", "spectrogram", "stacked"), layers=Int(1, 8), hidden=Int(8, 8192),
            dropout=DROPOUT, batch_norm=FLAG)
class MLP(nn.Module):
    """Flatten -> ``layers`` x (linear, [batch norm], ReLU, dropout) -> linear.

    Args:
        n_classes: number of genres.
        input_shape: the feature shape of one example (flattened).
        layers: hidden layers.
        hidden: units of the first hidden layer (halved per layer, at least 16).
        dropout: dropout after each hidden layer.
        batch_norm: batch norm after each hidden linear layer.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], layers: int = 2, hidden: int = 128,
                 dropout: float = 0.2, batch_norm: bool = True) -> None:
        super().__init__()
        width = math.prod(input_shape)
        blocks: list[nn.Module] = []
        for i in range(layers):
            out = max(16, hidden // 2**i)
            blocks += [nn.Linear(width, out)]
            blocks += [nn.BatchNorm1d(out)] if batch_norm else []
            blocks += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = out
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Example embeddings ``(batch, width)``: the last hidden layer (after its dropout)."""
        return self.body(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
