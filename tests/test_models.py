"""Every registered model runs forward and backward on a tiny batch."""

from __future__ import annotations

import pytest
import torch

from genre_ray.models import REGISTRY, UnknownModelError, build_model, model_class

#: Models that read one fixed input shape (the pretrained networks' log-mel patch)
FIXED_SHAPE = {"pretrained": (96, 187)}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    shape = FIXED_SHAPE.get(name, (32, 40))
    model = build_model(name, n_classes=4, input_shape=shape)
    x = torch.randn(3, *shape)
    logits = model(x)
    assert logits.shape == (3, 4)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_docstring_cites_its_source(name: str) -> None:
    module = __import__(REGISTRY[name].split(":")[0], fromlist=["x"])
    assert module.__doc__ and len(module.__doc__) > 40


def test_cnn2d_hyperparameters_change_the_network() -> None:
    small = build_model("cnn2d", 4, (32, 40), depth=2, width=4, batch_norm=False)
    big = build_model("cnn2d", 4, (32, 40), depth=4, width=16, batch_norm=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(big) > 10 * count(small)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in small.modules())


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError, match=r"valid models: .*cnn2d"):
        model_class("transformer9000")


@pytest.mark.parametrize(("pool", "shape"), [
    (torch.nn.MaxPool2d(2), (5, 3, 17, 23)),  # odd sizes: floor mode drops the last row and column
    (torch.nn.MaxPool2d((2, 1)), (2, 4, 9, 7)),  # crnn's frequency-only pooling
    (torch.nn.MaxPool2d((3, 2)), (2, 2, 10, 11)),
    (torch.nn.MaxPool1d(2), (4, 6, 31)),
])
def test_strided_pooling_gives_torch_values_in_inference(pool: torch.nn.Module,
                                                         shape: tuple[int, ...]) -> None:
    from genre_ray.models._blocks import MaxPool1d, MaxPool2d, strided_max

    ours = (MaxPool1d if isinstance(pool, torch.nn.MaxPool1d) else MaxPool2d)(pool.kernel_size)
    x = torch.relu(torch.randn(shape))  # ReLU maps: many tied zeros, as in the models
    x[0, 0, 1] = float("nan")  # a NaN reaches its window's output, as in torch
    with torch.inference_mode():
        expected = pool(x)
        size = pool.kernel_size
        kernel = size if isinstance(size, tuple) else (size,) * (x.dim() - 2)
        assert torch.equal(strided_max(x, kernel).isnan(), expected.isnan())
        assert torch.allclose(ours(x), expected, equal_nan=True, rtol=0, atol=0)
    # Training keeps torch's pooling, and so its gradient.
    a, b = x.nan_to_num().requires_grad_(), x.nan_to_num().requires_grad_()
    pool(a).sum().backward()
    ours(b).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_conv_models_pool_by_strided_max() -> None:
    from genre_ray.models._blocks import MaxPool1d, MaxPool2d

    for name in ("cnn2d", "crnn", "combined", "cnn1d"):
        kinds = {type(m) for m in build_model(name, 4, (32, 40)).modules()}
        assert kinds & {MaxPool1d, MaxPool2d}, name
        assert not kinds & {torch.nn.MaxPool1d, torch.nn.MaxPool2d}, name


def test_a_model_saved_with_torch_pools_gets_the_strided_ones(tmp_path) -> None:
    from genre_ray.features import FeatureSettings
    from genre_ray.models._blocks import MaxPool2d
    from genre_ray.serving.classifier import SongClassifier

    torch.manual_seed(0)
    model = build_model("cnn2d", 3, (64, 130)).eval()
    for parent in model.modules():  # as a model pickled before genre_ray had its own pools
        for key, child in list(parent.named_children()):
            if isinstance(child, MaxPool2d):
                setattr(parent, key, torch.nn.MaxPool2d(child.kernel_size))
    x = torch.randn(4, 64, 130)
    with torch.inference_mode():
        before = model(x)
    SongClassifier(model, ["a", "b", "c"], "logmel", FeatureSettings()).save(tmp_path / "clf")
    loaded = SongClassifier.load(tmp_path / "clf").model
    assert any(type(m) is MaxPool2d for m in loaded.modules())
    assert not any(type(m) is torch.nn.MaxPool2d for m in loaded.modules())
    with torch.inference_mode():
        assert torch.equal(loaded(x), before)
