"""Every registered model runs forward and backward on a tiny batch."""

from __future__ import annotations

import pytest
import torch

from genre_ray.models import REGISTRY, UnknownModelError, build_model, model_class


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, n_classes=4, input_shape=(32, 40))
    x = torch.randn(3, 32, 40)
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
