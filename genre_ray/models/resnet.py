"""A small residual network trained from scratch on log-mel clips or spectrogram images.

The BasicBlock residual unit (two 3x3 convolutions with batch norm and an identity or 1x1
projection shortcut) and stage layout (channels doubling, stride-2 downsampling at each new
stage, global average pooling into a linear classifier) of He, Zhang, Ren and Sun, "Deep Residual
Learning for Image Recognition" (CVPR 2016), in the narrow CIFAR-style form with a 3x3 stem.
"""

from __future__ import annotations

import torch
from torch import nn

from genre_ray.models._blocks import clip_shape
from genre_ray.models.spec import DROPOUT, Int, model_spec

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: ``(freq, time)`` stride of the first convolution and of the shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != (1, 1) or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


@model_spec(inputs=("spectrogram", "stacked"), stages=Int(1, 4), width=Int(4, 128),
            blocks_per_stage=Int(1, 2), dropout=DROPOUT)
class ResNet(nn.Module):
    """3x3 stem -> ``stages`` x ``blocks_per_stage`` BasicBlocks -> global average pool -> dropout -> linear.

    Stage ``s`` has ``width * 2**s`` channels; every stage after the first starts with a stride-2
    block, striding only dimensions that are still at least 2 long.

    Args:
        n_classes: number of genres.
        input_shape: ``(bins, frames)`` of a clip, or ``(height, width)`` of a grey image.
        stages: number of stages.
        width: channels of the stem and the first stage.
        blocks_per_stage: BasicBlocks per stage.
        dropout: dropout before the classifier.
    """

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], stages: int = 3, width: int = 16,
                 blocks_per_stage: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        height, length = clip_shape("resnet", input_shape)
        channels = width
        blocks: list[nn.Module] = []
        for s in range(stages):
            out = width * 2**s
            for b in range(blocks_per_stage):
                stride = (1, 1)
                if s > 0 and b == 0:
                    stride = (2 if height >= 2 else 1, 2 if length >= 2 else 1)
                    height, length = -(-height // stride[0]), -(-length // stride[1])  # ceil
                blocks.append(BasicBlock(channels, out, stride))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip embeddings ``(batch, channels)``: the globally averaged last feature map."""
        return self.blocks(self.stem(x.unsqueeze(1))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
