"""The recurrent, 1-D, residual, WaveNet and combined models: hyperparameters shape the network, odd input
sizes work."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from genre_ray.models import FAMILY, INPUTS, accepts, build_model

ZOO = ("crnn", "bilstm", "cnn1d", "resnet", "wavenet", "combined")

#: model -> (small params, big params): the big network must have many more parameters.
SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "crnn": ({"conv_depth": 1, "width": 4, "rnn_hidden": 8},
             {"conv_depth": 4, "width": 16, "rnn_hidden": 64}),
    "bilstm": ({"hidden": 8, "layers": 1}, {"hidden": 64, "layers": 2}),
    "cnn1d": ({"depth": 1, "width": 8, "kernel": 3}, {"depth": 4, "width": 64, "kernel": 7}),
    "resnet": ({"stages": 1, "width": 4, "blocks_per_stage": 1},
               {"stages": 4, "width": 16, "blocks_per_stage": 2}),
    "wavenet": ({"channels": 4, "layers": 2}, {"channels": 32, "layers": 8, "stacks": 2}),
    "combined": ({"width": 4, "conv_depth": 1, "rnn_hidden": 8},
                 {"width": 16, "conv_depth": 4, "rnn_hidden": 64}),
}

#: Input shapes for the size checks: clips, except raw waveforms for wavenet.
SHAPE = {name: (1, 800) if name == "wavenet" else (32, 40) for name in ZOO}
CLIPS = [(16, 20), (64, 130), (32, 44), (32, 32), (8, 3)]
#: The waveform model's odd sizes: the shortest clip, odd lengths, 3 s at 8 kHz, a stereo clip.
WAVES = [(1, 4), (1, 64), (1, 333), (1, 24000), (2, 257)]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_inputs_each_model_accepts() -> None:
    for name in ("crnn", "bilstm", "cnn1d", "resnet"):
        assert accepts(name, "logmel") and accepts(name, "stacked") and accepts(name, "mfcc")
        assert not accepts(name, "stats") and not accepts(name, "gtzan57")
    assert accepts("cnn1d", "waveform") and not accepts("crnn", "waveform")
    assert [kind for kind in FAMILY if accepts("wavenet", kind)] == ["waveform"]
    assert [kind for kind in FAMILY if accepts("combined", kind)] == ["stacked"]
    assert INPUTS["wavenet"] == ("waveform",) and INPUTS["combined"] == ("stacked",)


@pytest.mark.parametrize("name", ZOO)
def test_hyperparameters_grow_the_network(name: str) -> None:
    small, big = (_count(build_model(name, 4, SHAPE[name], **params)) for params in SIZES[name])
    assert big > 5 * small


@pytest.mark.parametrize(("name", "shape"), [(n, s) for n in ZOO for s in WAVES if n == "wavenet"]
                         + [(n, s) for n in ZOO for s in CLIPS if n != "wavenet"])
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


def test_wavenet_is_causal_and_strided() -> None:
    torch.manual_seed(0)
    model = build_model("wavenet", 4, (1, 800), channels=8, layers=3, stacks=2, downsample=4).eval()
    assert [b.dilation for b in model.blocks] == [1, 2, 4, 1, 2, 4]
    assert all(b.residual is not None for b in model.blocks[:-1]) and model.blocks[-1].residual is None
    x = torch.randn(1, 1, 800)
    later = x.clone()
    later[..., 400:] += torch.randn(400)
    with torch.no_grad():
        a, b = model.features(x), model.features(later)
    assert a.shape == (1, 8, 200)  # 800 samples // 4
    torch.testing.assert_close(a[..., :100], b[..., :100])  # frame j sees samples < 4 * (j + 1)
    assert not torch.allclose(a[..., 100], b[..., 100])


def test_wavenet_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="at least downsample=8"):
        build_model("wavenet", 4, (1, 7), downsample=8)
    with pytest.raises(ValueError, match="layers must be >= 1"):
        build_model("wavenet", 4, (1, 800), layers=0)


def test_combined_routes_row_groups_to_its_branches() -> None:
    torch.manual_seed(0)
    model = build_model("combined", 4, (40, 32), groups=(24, 10, 6), width=4, conv_depth=2, rnn_hidden=8)
    model.eval()
    assert model.rnn.input_size == 16 and model.rnn.bidirectional
    cnn_dims = 2 * 8  # mean and max of the last block's 8 channels, then the GRU's 4 * 8
    x = torch.randn(2, 40, 32)
    spectro, rest = x.clone(), x.clone()
    spectro[:, :24] += 1.0
    rest[:, 24:] += 1.0
    with torch.no_grad():
        base, a, b = model.embed(x), model.embed(spectro), model.embed(rest)
    assert base.shape == (2, cnn_dims + 32)
    torch.testing.assert_close(a[:, cnn_dims:], base[:, cnn_dims:])  # first group -> CNN only
    assert not torch.allclose(a[:, :cnn_dims], base[:, :cnn_dims])
    torch.testing.assert_close(b[:, :cnn_dims], base[:, :cnn_dims])  # other groups -> GRU only
    assert not torch.allclose(b[:, cnn_dims:], base[:, cnn_dims:])


@pytest.mark.parametrize("groups", [None, (40,), [40]])
def test_combined_without_groups_reads_all_rows_in_both_branches(groups: Any) -> None:
    model = build_model("combined", 4, (40, 32), groups=groups)
    assert model.rnn.input_size == 40 and model.cnn_rows == 40
    assert model(torch.randn(2, 40, 32)).shape == (2, 4)


@pytest.mark.parametrize(("shape", "groups"),
                         [((13, 7), (5, 5, 3)), ((3, 1), (1, 1, 1)), ((96, 130), (64, 32))])
def test_combined_works_on_odd_groups(shape: tuple[int, int], groups: tuple[int, ...]) -> None:
    model = build_model("combined", 3, shape, groups=groups)
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize(("groups", "message"), [((64, 20), "sum to the input's 96 rows"),
                                                 ((64, 0, 32), "positive row counts"),
                                                 ((), "positive row counts"),
                                                 ((64.0, 32), "positive row counts")])
def test_combined_rejects_bad_groups(groups: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model("combined", 4, (96, 130), groups=groups)
