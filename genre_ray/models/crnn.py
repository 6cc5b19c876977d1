"""A convolutional recurrent network (CRNN) over log-mel clips.

After Choi, Fazekas, Sandler and Cho, "Convolutional Recurrent Neural Networks for Music
Classification" (ICASSP 2017): a few 2-D conv blocks summarise local spectro-temporal patterns
and pool mostly over frequency, so that the time axis survives at a useful resolution; a GRU
then summarises the sequence of frame embeddings and its last hidden state feeds the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from genre_ray.models._blocks import MaxPool2d, clip_shape, conv_bn_relu
from genre_ray.models.spec import DROPOUT, FLAG, Int, model_spec

__all__ = ["CRNN"]


@model_spec(inputs=("spectrogram", "stacked"), conv_depth=Int(1, 5), width=Int(4, 128),
            rnn_hidden=Int(8, 512), dropout=DROPOUT, batch_norm=FLAG)
class CRNN(nn.Module):
    """Conv blocks (pool frequency, time only in the first block) -> GRU over time -> dropout -> linear.

    Each conv block is a 3x3 convolution, optional batch norm, ReLU and max pooling by 2 over
    frequency (and by 2 over time in the first block only); pooling a dimension stops once it is
    a single row. The feature map is then collapsed over frequency (mean and max) and the GRU reads
    one vector per remaining frame.

    Args:
        n_classes: number of genres.
        input_shape: ``(bins, frames)`` of one clip.
        conv_depth: number of conv blocks.
        width: channels of the first block (doubles per block, capped at 4x).
        rnn_hidden: hidden units of the GRU.
        dropout: dropout before the classifier.
        batch_norm: batch norm after each convolution.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], conv_depth: int = 3, width: int = 16,
                 rnn_hidden: int = 64, dropout: float = 0.2, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        bins, frames = clip_shape("crnn", input_shape)
        for i in range(conv_depth):
            out = width * min(2**i, 4)
            layers += conv_bn_relu(channels, out, batch_norm)
            pool_f = 2 if bins >= 2 else 1
            pool_t = 2 if i == 0 and frames >= 8 else 1  # keep the time axis long for the GRU
            if pool_f > 1 or pool_t > 1:
                layers += [MaxPool2d((pool_f, pool_t))]
                bins, frames = bins // pool_f, frames // pool_t
            channels = out
        self.features = nn.Sequential(*layers)
        self.rnn = nn.GRU(2 * channels, rnn_hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(rnn_hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, rnn_hidden)``: the GRU's last hidden state."""
        h = self.features(x.unsqueeze(1))  # (batch, channels, bins', frames')
        seq = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1).transpose(1, 2)  # (batch, frames', 2C)
        _, last = self.rnn(seq)
        return last[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
