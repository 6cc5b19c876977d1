"""Model registry: a name in a search space -> the class that builds it.

A new architecture is one file in this package and one line in ``REGISTRY``. Every model takes
``n_classes`` and ``input_shape`` (the per-clip feature shape, e.g. ``(n_mels, frames)``) plus
its own keyword arguments, which are its searchable hyperparameters, and maps a batch of
features to logits. Models take features, never file paths.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["INPUT_NDIM", "REGISTRY", "UnknownModelError", "build_model", "model_class"]

#: name -> "module:Class", imported only when used so that config validation stays light.
REGISTRY: dict[str, str] = {
    "cnn2d": "genre_ray.models.cnn2d:CNN2D",
    "mlp": "genre_ray.models.mlp:MLP",
    "crnn": "genre_ray.models.crnn:CRNN",
    "bilstm": "genre_ray.models.bilstm:BiLSTM",
    "cnn1d": "genre_ray.models.cnn1d:CNN1D",
    "resnet": "genre_ray.models.resnet:ResNet",
}

#: Feature dimensions (without the batch axis) each model accepts; config checks this early.
INPUT_NDIM: dict[str, tuple[int, ...]] = {
    "cnn2d": (2,), "mlp": (1, 2), "crnn": (2,), "bilstm": (2,), "cnn1d": (2,), "resnet": (2,),
}


class UnknownModelError(KeyError):
    """A model name that is not in the registry; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


def model_class(name: str) -> type:
    """The class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(sorted(REGISTRY))}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, n_classes: int, input_shape: tuple[int, ...], **params: Any) -> Any:
    """Instantiate a registered model.

    Args:
        name: a key of :data:`REGISTRY`.
        n_classes: the number of genres.
        input_shape: the feature shape of one clip, without the batch dimension.
        **params: the model's hyperparameters.

    Returns:
        A ``torch.nn.Module`` mapping ``(batch, *input_shape)`` to ``(batch, n_classes)`` logits.
    """
    return model_class(name)(n_classes=n_classes, input_shape=tuple(input_shape), **params)
