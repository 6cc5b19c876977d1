"""The "combined" model: parallel branches over several features of a clip, merged before the classifier.

The multi-input genre model of the student projects genre_ray grew from, in which a small CNN reads
the log-mel spectrogram while a recurrent network reads the MFCC and chroma frames, and the two
clip embeddings are concatenated into one classifier; the same early-fusion design as the
parallel CNN-RNN of Feng, Liu and Yao, "Music Genre Classification with Paralleling Recurrent
Convolutional Neural Network" (arXiv:1712.08370, 2017). The CNN branch uses the blocks of
:mod:`genre_ray.models.cnn2d`; the recurrent branch is a bidirectional GRU (Cho et al., 2014).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from genre_ray.models._blocks import MaxPool2d, clip_shape, conv_bn_relu
from genre_ray.models.spec import DROPOUT, Int, model_spec

__all__ = ["Combined"]


def _split_rows(bins: int, groups: Sequence[int] | None) -> tuple[int, int]:
    """Rows read by the CNN branch and by the GRU branch: ``(first group, the rest)``.

    With no groups, or a single one, both branches read all ``bins`` rows (returned as ``(bins, 0)``).
    """
    if groups is None:
        return bins, 0
    groups = tuple(groups)
    if not groups or any(not isinstance(g, numbers.Integral) or isinstance(g, bool) or g < 1 for g in groups):
        raise ValueError(f"combined groups must be positive row counts, got {groups}")
    groups = tuple(int(g) for g in groups)
    if sum(groups) != bins:
        raise ValueError(f"combined groups must sum to the input's {bins} rows, got {groups} "
                         f"(sum {sum(groups)})")
    return groups[0], bins - groups[0]


@model_spec(inputs=("stacked",), data_inputs=("groups",), width=Int(4, 128), conv_depth=Int(1, 5),
            rnn_hidden=Int(8, 512), dropout=DROPOUT)
class Combined(nn.Module):
    """CNN branch over the first row group || BiGRU branch over the other rows -> concat -> dropout -> linear.

    The input is a ``stacked`` feature: a ``(bins, frames)`` map whose rows are several features one
    above the other (e.g. 64 log-mel | 20 MFCC | 12 chroma rows, ``groups=(64, 20, 12)``).

    * CNN branch, on the first group's rows: ``conv_depth`` blocks of 3x3 convolution, batch norm,
      ReLU and 2x2 max pooling (pooling stops once the map is a single row or column), channels
      ``width * 2**i`` capped at 4x; then global average + max pooling: ``2 * channels`` values.
    * GRU branch, on the remaining groups' rows: a bidirectional GRU reads one frame per step; its
      outputs averaged over time and its final hidden states of both directions:
      ``4 * rnn_hidden`` values.

    With ``groups=None`` or a single group, both branches read all rows.

    Args:
        n_classes: number of genres.
        input_shape: ``(bins, frames)`` of one clip.
        groups: row counts of the stacked features, top to bottom; they must sum to ``bins``.
        width: channels of the first conv block (doubles per block, capped at 4x).
        conv_depth: conv blocks of the CNN branch.
        rnn_hidden: GRU hidden units per direction.
        dropout: dropout before the classifier.

    Raises:
        ValueError: for a non-2-D ``input_shape``, ``groups`` that do not sum to ``bins``, or a
            size below 1.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], groups: Sequence[int] | None = None,
                 width: int = 8, conv_depth: int = 2, rnn_hidden: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        bins, frames = clip_shape("combined", input_shape)
        for name, value in (("width", width), ("conv_depth", conv_depth), ("rnn_hidden", rnn_hidden)):
            if value < 1:
                raise ValueError(f"combined {name} must be >= 1, got {value}")
        self.cnn_rows, self.rnn_rows = _split_rows(bins, groups)
        layers: list[nn.Module] = []
        channels, height = 1, self.cnn_rows
        for i in range(conv_depth):
            out = width * min(2**i, 4)
            layers += conv_bn_relu(channels, out, batch_norm=True)
            if height >= 2 and frames >= 2:
                layers += [MaxPool2d(2)]
                height, frames = height // 2, frames // 2
            channels = out
        self.cnn = nn.Sequential(*layers)
        self.rnn = nn.GRU(self.rnn_rows or bins, rnn_hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels + 4 * rnn_hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, 2 * channels + 4 * rnn_hidden)``: both branches concatenated."""
        if self.rnn_rows:
            image, sequence = x[:, :self.cnn_rows], x[:, self.cnn_rows:]
        else:
            image = sequence = x
        h = self.cnn(image.unsqueeze(1))
        cnn = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        out, last = self.rnn(sequence.transpose(1, 2))  # out (batch, frames, 2H); last (2, batch, H)
        rnn = torch.cat([out.mean(dim=1), last.transpose(0, 1).flatten(1)], dim=1)
        return torch.cat([cnn, rnn], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
