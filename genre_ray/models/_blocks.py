"""Building blocks shared by the convolutional models."""

from __future__ import annotations

from torch import nn

__all__ = ["clip_shape", "conv_bn_relu"]


def conv_bn_relu(channels: int, out: int, batch_norm: bool, dims: int = 2, kernel: int = 3) -> list[nn.Module]:
    """Convolution ("same" padding), optional batch norm, ReLU: the unit every conv model stacks.

    Args:
        channels: input channels.
        out: output channels.
        batch_norm: add batch norm (the convolution then has no bias).
        dims: 2 for spectrogram maps, 1 for frame sequences.
        kernel: kernel size.
    """
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    layers: list[nn.Module] = [conv(channels, out, kernel, padding="same", bias=not batch_norm)]
    layers += [norm(out)] if batch_norm else []
    return layers + [nn.ReLU(inplace=True)]


def clip_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(bins, frames)`` of a clip model's input, or a clear error for other feature shapes."""
    if len(input_shape) != 2:
        raise ValueError(f"{model} needs (bins, frames) features, got shape {input_shape}")
    return int(input_shape[0]), int(input_shape[1])
