"""A bidirectional LSTM over the frames of a log-mel clip.

The recurrent baseline of the MFCC/log-mel genre projects (an LSTM reading one spectral frame per
step, e.g. the GTZAN "LSTM on MFCC" tutorials) built from the long short-term memory cell of
Hochreiter and Schmidhuber, "Long Short-Term Memory" (Neural Computation, 1997), read in both
directions (Graves and Schmidhuber, 2005) and pooled over time by mean and max.
"""

from __future__ import annotations

import torch
from torch import nn

from genre_ray.models._blocks import clip_shape
from genre_ray.models.spec import DROPOUT, Int, model_spec

__all__ = ["BiLSTM"]


@model_spec(inputs=("spectrogram", "stacked"), hidden=Int(8, 512), layers=Int(1, 4), dropout=DROPOUT)
class BiLSTM(nn.Module):
    """Bidirectional LSTM over frames -> mean + max pooling over time -> dropout -> linear.

    Each frame's ``bins`` values are one input vector; the clip is a sequence of ``frames`` steps.

    Args:
        n_classes: number of genres.
        input_shape: ``(bins, frames)`` of one clip.
        hidden: hidden units per direction.
        layers: stacked LSTM layers.
        dropout: dropout between LSTM layers and before the classifier.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], hidden: int = 64, layers: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        bins, _ = clip_shape("bilstm", input_shape)
        self.rnn = nn.LSTM(bins, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, 4 * hidden)``: mean and max of both directions over time."""
        out, _ = self.rnn(x.transpose(1, 2))  # (batch, frames, 2 * hidden)
        return torch.cat([out.mean(dim=1), out.amax(dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
