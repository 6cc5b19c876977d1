"""A 1-D (temporal) CNN over log-mel clips, mel bins as input channels.

After Dieleman and Schrauwen, "End-to-end learning for music audio" (ICASSP 2014), whose
mel-spectrogram baseline convolves over time only, every filter spanning all frequency bands,
with max pooling over time and a global temporal summary; here the summary is global average
and max pooling, as in the clip models of the projects genre_ray grew from.
"""

from __future__ import annotations

import torch
from torch import nn

from genre_ray.models._blocks import MaxPool1d, clip_shape, conv_bn_relu
from genre_ray.models.spec import DROPOUT, FLAG, Int, model_spec

__all__ = ["CNN1D"]


@model_spec(inputs=("spectrogram", "stacked", "waveform"), depth=Int(1, 6), width=Int(4, 256),
            kernel=Int(1, 15), dropout=DROPOUT, batch_norm=FLAG)
class CNN1D(nn.Module):
    """Conv1d blocks over time -> global average + max pooling -> dropout -> linear.

    Each block is a ``kernel``-wide convolution (``same`` padding), optional batch norm, ReLU and
    max pooling by 2 over time, which stops once a single frame is left.

    Args:
        n_classes: number of genres.
        input_shape: ``(bins, frames)`` of one clip; the bins are the input channels.
        depth: number of conv blocks.
        width: channels of the first block (doubles per block, capped at 4x).
        kernel: temporal kernel size in frames (odd values keep the filters centred).
        dropout: dropout before the classifier.
        batch_norm: batch norm after each convolution.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], depth: int = 3, width: int = 32,
                 kernel: int = 5, dropout: float = 0.2, batch_norm: bool = True) -> None:
        super().__init__()
        if kernel < 1:
            raise ValueError(f"cnn1d kernel must be >= 1, got {kernel}")
        layers: list[nn.Module] = []
        channels, frames = clip_shape("cnn1d", input_shape)
        for i in range(depth):
            out = width * min(2**i, 4)
            layers += conv_bn_relu(channels, out, batch_norm, dims=1, kernel=kernel)
            if frames >= 2:
                layers += [MaxPool1d(2)]
                frames //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, 2 * channels)`` before the classifier."""
        h = self.features(x)  # (batch, channels, frames')
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
