"""The recurrent, 1-D, and residual models: hyperparameters shape the network, odd input sizes work."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from genre_ray.models import INPUT_NDIM, build_model

ZOO = ("crnn", "bilstm", "cnn1d", "resnet")

#: model -> (small params, big params): the big network must have many more parameters.
SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "crnn": ({"conv_depth": 1, "width": 4, "rnn_hidden": 8},
             {"conv_depth": 4, "width": 16, "rnn_hidden": 64}),
    "bilstm": ({"hidden": 8, "layers": 1}, {"hidden": 64, "layers": 2}),
    "cnn1d": ({"depth": 1, "width": 8, "kernel": 3}, {"depth": 4, "width": 64, "kernel": 7}),
    "resnet": ({"stages": 1, "width": 4, "blocks_per_stage": 1},
               {"stages": 4, "width": 16, "blocks_per_stage": 2}),
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ZOO)
def test_registered_for_2d_features(name: str) -> None:
    assert INPUT_NDIM[name] == (2,)


@pytest.mark.parametrize("name", ZOO)
def test_hyperparameters_grow_the_network(name: str) -> None:
    small, big = SIZES[name]
    assert _count(build_model(name, 4, (32, 40), **big)) > 5 * _count(build_model(name, 4, (32, 40), **small))


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("shape", [(16, 20), (64, 130), (32, 44), (32, 32), (8, 3)])
def test_works_on_small_and_full_clips(name: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    for params in SIZES[name]:
        model = build_model(name, n_classes=5, input_shape=shape, **params)
        logits = model(torch.randn(2, *shape))
        assert logits.shape == (2, 5) and torch.isfinite(logits).all()
        logits.sum().backward()
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, *shape)).shape == (1, 5)


@pytest.mark.parametrize("name", ZOO)
def test_rejects_1d_features(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_model(name, 4, (64,))


def test_crnn_keeps_time_for_the_gru_and_drops_batch_norm() -> None:
    model = build_model("crnn", 4, (64, 130), conv_depth=4, width=8, batch_norm=False)
    h = model.features(torch.randn(1, 1, 64, 130))
    assert h.shape[2] == 4 and h.shape[3] == 65  # frequency pooled 16x, time only 2x
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_bilstm_layers_and_direction() -> None:
    model = build_model("bilstm", 4, (64, 130), hidden=32, layers=2)
    assert model.rnn.bidirectional and model.rnn.num_layers == 2 and model.rnn.input_size == 64


def test_cnn1d_kernel_and_batch_norm() -> None:
    wide = build_model("cnn1d", 4, (64, 130), depth=2, width=16, kernel=7, batch_norm=False)
    narrow = build_model("cnn1d", 4, (64, 130), depth=2, width=16, kernel=3)
    assert wide.features[0].kernel_size == (7,) and wide.features[0].in_channels == 64
    assert _count(wide) > _count(narrow)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in wide.modules())


def test_resnet_downsamples_between_stages() -> None:
    model = build_model("resnet", 4, (32, 32), stages=3, width=8, blocks_per_stage=2)
    assert len(model.blocks) == 6
    h = model.blocks(model.stem(torch.randn(1, 1, 32, 32)))
    assert h.shape == (1, 32, 8, 8)
