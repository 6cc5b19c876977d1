"""A WaveNet-style classifier over raw waveforms.

The residual stack of van den Oord et al., "WaveNet: A Generative Model for Raw Audio"
(arXiv:1609.03499, 2016): dilated causal convolutions of kernel 2 with dilations doubling per
layer, the gated activation ``tanh(W_f * x) * sigmoid(W_g * x)``, 1x1 residual and skip
convolutions, and an output stack over the sum of the skips. As in the paper's speech-recognition
experiment, a classifier replaces the sample-level softmax: the output stack is pooled over time.
A strided convolution in front shortens the sequence first, so that a 3-s clip trains at a usable
speed on a CPU (the 1-D front ends of Dieleman and Schrauwen, "End-to-end learning for music
audio", ICASSP 2014, stride over samples in the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genre_ray.models.spec import DROPOUT, Int, model_spec

__all__ = ["GatedResidualBlock", "WaveNet"]


class GatedResidualBlock(nn.Module):
    """One WaveNet layer: dilated causal conv -> ``tanh * sigmoid`` -> 1x1 skip and 1x1 residual.

    Args:
        channels: residual (and skip) channels.
        dilation: dilation of the kernel-2 causal convolution.
        residual: add the 1x1 residual convolution; the last layer of the network has none, since
            only its skip output is used.
    """

    def __init__(self, channels: int, dilation: int, residual: bool = True) -> None:
        super().__init__()
        self.dilation = dilation
        # One convolution computes the filter and the gate halves together.
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size=2, dilation=dilation)
        self.skip = nn.Conv1d(channels, channels, 1)
        self.residual = nn.Conv1d(channels, channels, 1) if residual else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(next residual input, skip output)``, both ``(batch, channels, frames)``."""
        h = self.conv(F.pad(x, (self.dilation, 0)))  # left padding keeps it causal and the length
        filt, gate = h.chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        out = x + self.residual(z) if self.residual is not None else x
        return out, self.skip(z)


@model_spec(inputs=("waveform",), channels=Int(4, 128), layers=Int(1, 12), stacks=Int(1, 4),
            downsample=Int(1, 64), dropout=DROPOUT)
class WaveNet(nn.Module):
    """Strided conv -> ``stacks`` x ``layers`` gated residual blocks -> sum of skips -> ReLU -> 1x1
    conv -> global average + max pooling over time -> dropout -> linear.

    The front end is a causal convolution of kernel ``2 * downsample`` and stride ``downsample``,
    so a clip of ``samples`` samples becomes ``samples // downsample`` frames. In each stack the
    dilations are 1, 2, 4, ..., ``2**(layers - 1)``: the receptive field before pooling is
    ``(stacks * (2**layers - 1) + 2) * downsample`` samples (260 with the defaults, 33 ms at 8 kHz);
    the global pooling then summarises the whole clip.

    Args:
        n_classes: number of genres.
        input_shape: ``(channels, samples)`` of one clip: ``(1, samples)`` for a mono waveform.
        channels: residual, skip and output channels.
        layers: gated residual blocks per stack (dilations up to ``2**(layers - 1)``).
        stacks: repetitions of the dilation cycle.
        downsample: stride of the front-end convolution, in samples.
        dropout: dropout before the classifier.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], channels: int = 16, layers: int = 6,
                 stacks: int = 1, downsample: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"wavenet needs (channels, samples) waveforms, got shape {input_shape}")
        in_channels, samples = int(input_shape[0]), int(input_shape[1])
        for name, value in (("channels", channels), ("layers", layers), ("stacks", stacks),
                            ("downsample", downsample)):
            if value < 1:
                raise ValueError(f"wavenet {name} must be >= 1, got {value}")
        if samples < downsample:
            raise ValueError(f"wavenet needs at least downsample={downsample} samples, got {samples}")
        self.downsample = downsample
        self.front = nn.Conv1d(in_channels, channels, kernel_size=2 * downsample, stride=downsample)
        depth = stacks * layers
        self.blocks = nn.ModuleList(
            GatedResidualBlock(channels, 2 ** (i % layers), residual=i < depth - 1) for i in range(depth))
        self.post = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The output stack before pooling, ``(batch, channels, samples // downsample)``; causal:
        frame ``j`` depends only on samples before ``(j + 1) * downsample``."""
        h = self.front(F.pad(x, (self.downsample, 0)))
        skips = torch.zeros_like(h)
        for block in self.blocks:
            h, skip = block(h)
            skips = skips + skip
        return self.post(F.relu(skips))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, 2 * channels)``: time mean and max of the output stack."""
        out = self.features(x)
        return torch.cat([out.mean(dim=2), out.amax(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
