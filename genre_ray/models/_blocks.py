"""Building blocks shared by the convolutional models."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MaxPool1d", "MaxPool2d", "clip_shape", "conv_bn_relu", "strided_max", "with_strided_pools"]


def strided_max(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """Max pooling of the last ``len(kernel)`` dimensions with stride = kernel, no padding, floor mode.

    It is the element-wise maximum of the ``k`` strided views of each dimension: the same values as
    torch's max pooling (NaN included), and on the CPU several times faster than it with one thread
    (``tests/test_models.py`` checks the values; ``bench tag`` reports the network's time).
    """
    first = x.dim() - len(kernel)
    for axis, k in enumerate(kernel, start=first):
        if k == 1:
            continue
        n = x.shape[axis] // k * k
        index = [slice(None)] * x.dim()
        views = []
        for i in range(k):
            index[axis] = slice(i, n, k)
            views.append(x[tuple(index)])
        out = torch.maximum(views[0], views[1])  # a new tensor: the in-place steps never touch x
        for view in views[2:]:
            torch.maximum(out, view, out=out)
        x = out
    return x


def _strided_kernel(pool: nn.MaxPool1d | nn.MaxPool2d, x: torch.Tensor, dims: int) -> tuple[int, ...] | None:
    """``pool``'s kernel where :func:`strided_max` gives its values for ``x`` and is worth it: CPU
    inference with stride = kernel, no padding or dilation, floor mode. Otherwise None: training
    keeps torch's pooling and its gradient (which goes to one element of a tied window), and a GPU
    keeps cuDNN's."""

    def tup(v: Any) -> tuple[int, ...]:
        return tuple(int(k) for k in v) if isinstance(v, (tuple, list)) else (int(v),) * dims

    kernel = tup(pool.kernel_size)
    plain = (tup(pool.stride) == kernel and set(tup(pool.padding)) == {0}
             and set(tup(pool.dilation)) == {1} and not pool.ceil_mode and not pool.return_indices)
    usable = (plain and x.device.type == "cpu" and not torch.is_grad_enabled()
              and all(s >= k for s, k in zip(x.shape[-dims:], kernel, strict=True)))
    return kernel if usable else None


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d`, by :func:`strided_max` for CPU inference: measured 5 to 7 times
    faster with one thread on the cnn2d maps of 76 clips. No parameters: the same ``state_dict``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = _strided_kernel(self, x, 2)
        return strided_max(x, kernel) if kernel else super().forward(x)


class MaxPool1d(nn.MaxPool1d):
    """:class:`torch.nn.MaxPool1d`, by :func:`strided_max` for CPU inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = _strided_kernel(self, x, 1)
        return strided_max(x, kernel) if kernel else super().forward(x)


def with_strided_pools(model: Any) -> Any:
    """A model pickled before :class:`MaxPool2d` and :class:`MaxPool1d` existed, with its torch max
    pools turned into them in place (they add no state), so that it too pools by strided_max."""
    if isinstance(model, nn.Module):
        for module in model.modules():
            if type(module) is nn.MaxPool2d:
                module.__class__ = MaxPool2d
            elif type(module) is nn.MaxPool1d:
                module.__class__ = MaxPool1d
    return model


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
