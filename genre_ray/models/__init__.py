"""Model registry: a name in a search space -> the class that builds it.

A new architecture is one file in this package and one line in ``REGISTRY``. Every model takes
``n_classes`` and ``input_shape`` (the per-clip feature shape, e.g. ``(n_mels, frames)``) plus
its own keyword arguments, which are its searchable hyperparameters, and maps a batch of
features to logits. Models take features, never file paths.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CLASSICAL", "FAMILY", "INPUTS", "REGISTRY", "UnknownModelError", "accepts", "build_model",
           "model_class"]

#: name -> "module:Class", imported only when used so that config validation stays light.
REGISTRY: dict[str, str] = {
    "cnn2d": "genre_ray.models.cnn2d:CNN2D",
    "mlp": "genre_ray.models.mlp:MLP",
    "crnn": "genre_ray.models.crnn:CRNN",
    "bilstm": "genre_ray.models.bilstm:BiLSTM",
    "cnn1d": "genre_ray.models.cnn1d:CNN1D",
    "resnet": "genre_ray.models.resnet:ResNet",
    "wavenet": "genre_ray.models.wavenet:WaveNet",
    "combined": "genre_ray.models.combined:Combined",
    "pretrained": "genre_ray.models.pretrained:Pretrained",
}

#: Classical scikit-learn models: name -> "module:builder"; ``builder(**params)`` returns an
#: unfitted estimator with ``predict_proba``. Trained by the same Tune trainable, one fit per trial.
CLASSICAL: dict[str, str] = {
    "svm": "genre_ray.models.classical:svm",
    "random_forest": "genre_ray.models.classical:random_forest",
    "knn": "genre_ray.models.classical:knn",
    "logreg": "genre_ray.models.classical:logreg",
    "gboost": "genre_ray.models.classical:gboost",
}

#: Feature kind -> the family of input it is, per clip (without the batch axis):
#: ``spectrogram`` (bins, frames); ``stacked`` a spectrogram whose rows are log-mel | MFCC | chroma;
#: ``vector`` (n,); ``waveform`` (1, samples); ``pretrained_input`` the pretrained networks' own
#: (96, 187) log-mel patch.
FAMILY: dict[str, str] = {
    "logmel": "spectrogram", "stft": "spectrogram", "mfcc": "spectrogram", "chroma": "spectrogram",
    "contrast": "spectrogram", "stacked": "stacked", "image": "spectrogram",
    "stats": "vector", "gtzan57": "vector", "table": "vector", "waveform": "waveform",
    # pretrained networks' clip embeddings (genre_ray.features.pretrained)
    "musicnn_msd": "vector", "musicnn_mtt": "vector", "vgg_msd": "vector", "vgg_mtt": "vector",
    # their input: one 3-s 96-band log-mel patch per clip, for the fine-tuned ``pretrained`` model
    "musicnn_mel": "pretrained_input",
}

#: The input families each model accepts; the config refuses any other pairing before a search.
INPUTS: dict[str, tuple[str, ...]] = {
    "cnn2d": ("spectrogram", "stacked"), "mlp": ("vector", "spectrogram", "stacked"),
    "crnn": ("spectrogram", "stacked"), "bilstm": ("spectrogram", "stacked"),
    "cnn1d": ("spectrogram", "stacked", "waveform"), "resnet": ("spectrogram", "stacked"),
    "wavenet": ("waveform",), "combined": ("stacked",), "pretrained": ("pretrained_input",),
    **{name: ("vector",) for name in CLASSICAL},
}


def accepts(model: str, kind: str) -> bool:
    """Whether ``model`` can be trained on feature ``kind``."""
    return FAMILY[kind] in INPUTS[model]


class UnknownModelError(KeyError):
    """A model name that is not in the registry; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


def model_class(name: str) -> type:
    """The class registered under ``name``."""
    try:
        target = REGISTRY.get(name) or CLASSICAL[name]
    except KeyError:
        valid = ", ".join(sorted([*REGISTRY, *CLASSICAL]))
        raise UnknownModelError(f"unknown model {name!r}; valid models: {valid}") from None
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
