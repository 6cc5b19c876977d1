"""A pretrained music network (musicnn or its VGG baseline) with a new genre head, fine-tuned or not.

The backbone starts from the shipped weights (:mod:`genre_ray.features.pretrained`) and reads the
network's own input, the ``musicnn_mel`` feature kind: one 3-s, 96-band log-mel patch per clip,
cached like every other kind. ``finetune`` chooses what trains:

- ``frozen``: only the head (the backbone runs in inference mode). The same model as a head on the
  cached embedding kinds (``musicnn_msd`` ... with ``mlp``/``logreg``), which is much faster
  because the backbone then runs once per clip, not once per epoch; offered here so that a search
  can compare the three forms on equal terms.
- ``last``: the head and the backbone's last block (musicnn's 200-unit dense layer and the batch
  norms around it; VGG's fifth convolution).
- ``all``: every weight.

Batch-norm statistics stay those of the pretrained network in every form (the layers stay in
inference mode): small genre collections are too small to re-estimate them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from genre_ray.features.pretrained import NETWORKS, load_network
from genre_ray.models.spec import DROPOUT, OneOf, model_spec

__all__ = ["FINETUNE", "Pretrained"]

FINETUNE = ("frozen", "last", "all")


@model_spec(inputs=("pretrained_input",), backbone=OneOf(*NETWORKS), finetune=OneOf(*FINETUNE),
            dropout=DROPOUT)
class Pretrained(nn.Module):
    """``(batch, 96, 187)`` log-mel patches -> genre logits, through a pretrained backbone."""

    #: The backbone normalises its own input (its first batch norm): the trainer must not standardise it.
    raw_input = True

    def __init__(self, n_classes: int, input_shape: tuple[int, ...], backbone: str = "musicnn_msd",
                 finetune: str = "last", dropout: float = 0.3) -> None:
        super().__init__()
        if backbone not in NETWORKS:
            raise ValueError(f"backbone must be one of {', '.join(NETWORKS)}, got {backbone!r}")
        if finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {', '.join(FINETUNE)}, got {finetune!r}")
        if tuple(input_shape) != (96, 187):
            raise ValueError(f"the pretrained model reads musicnn_mel clips (96, 187), got {tuple(input_shape)}")
        self.backbone_name, self.finetune = backbone, finetune
        self.arch = NETWORKS[backbone].arch
        self.backbone = copy.deepcopy(load_network(backbone, "cpu"))
        for p in self.backbone.parameters():
            p.requires_grad = finetune == "all"
        if finetune == "last":
            last = ([self.backbone.bn_pool, self.backbone.dense, self.backbone.bn_dense] if self.arch == "musicnn"
                    else [self.backbone.convs[4], self.backbone.bns[4]])
            for module in last:
                for p in module.parameters():
                    p.requires_grad = True
        width = 200 if self.arch == "musicnn" else 256
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_classes)
        self.train()

    def train(self, mode: bool = True) -> Pretrained:
        super().train(mode)
        self.backbone.eval()  # pretrained batch-norm statistics, and the backbone's own dropout off
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune != "frozen"):
            out = self.backbone(x.transpose(1, 2))
        return out["penultimate"] if self.arch == "musicnn" else out["pool5"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))
