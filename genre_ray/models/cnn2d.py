"""A 2-D CNN over log-mel clips.

The block design (3x3 convolutions, batch norm, ReLU, 2x2 max pooling, widths doubling per
block, global pooling into a linear classifier) follows the small spectrogram CNNs of
Choi et al., "Convolutional recurrent neural networks for music classification" (ICASSP 2017)
and of the 3-s snippet models in the projects genre_ray grew from.
"""

from __future__ import annotations

import torch
from torch import nn

from genre_ray.models._blocks import MaxPool2d, clip_shape, conv_bn_relu
from genre_ray.models.spec import DROPOUT, FLAG, Int, model_spec

__all__ = ["CNN2D"]


@model_spec(inputs=("spectrogram", "stacked"), depth=Int(1, 6), width=Int(4, 256), dropout=DROPOUT,
            batch_norm=FLAG)
class CNN2D(nn.Module):
    """Conv blocks -> global average + max pooling -> dropout -> linear.

    Args:
        n_classes: number of genres.
        input_shape: ``(bins, frames)`` of one clip.
        depth: number of conv blocks.
        width: channels of the first block (doubles per block, capped at 8x).
        dropout: dropout before the classifier.
        batch_norm: batch norm after each convolution.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], depth: int = 3, width: int = 16,
                 dropout: float = 0.2, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        bins, frames = clip_shape("cnn2d", input_shape)
        for i in range(depth):
            out = width * min(2**i, 8)
            layers += conv_bn_relu(channels, out, batch_norm)
            if bins >= 2 and frames >= 2:  # stop pooling once the map is a single row or column
                layers += [MaxPool2d(2)]
                bins, frames = bins // 2, frames // 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, 2 * channels)`` before the classifier."""
        h = self.features(x.unsqueeze(1))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
