"""Model registry: a name in a search space -> the class that builds it, and its spec.

A new architecture is one file in this package, one line in ``REGISTRY`` and one YAML. Every model
takes ``n_classes`` and ``input_shape`` (the per-clip feature shape, e.g. ``(n_mels, frames)``) plus
its own keyword arguments, which are its searchable hyperparameters, and maps a batch of features
to logits. Beside its class, :func:`~genre_ray.models.spec.model_spec` declares the input families
it takes and the rule of each hyperparameter; the defaults are its constructor's. Models take
features, never file paths.

A model from outside the package (a plugin, a test) is registered by putting the decorated class
itself in ``REGISTRY`` (or a builder in ``CLASSICAL``): the entries of a search's models travel
with its trials (:func:`entries`, :func:`register`), so every trial's process finds it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from genre_ray.features.kinds import FAMILY
from genre_ray.models.spec import ModelSpec, SpecError, read_spec

__all__ = ["CLASSICAL", "FAMILY", "INPUTS", "REGISTRY", "ModelSpec", "UnknownModelError", "accepts", "build_model",
           "entries", "model_class", "model_names", "register", "spec_of"]

#: A registry entry: ``"module:attr"``, imported only when used so that config validation stays
#: light, or the decorated class or builder itself.
Target = str | Any

#: name -> the ``torch.nn.Module`` class.
REGISTRY: dict[str, Target] = {
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

#: Classical scikit-learn models: name -> builder; ``builder(**params)`` returns an unfitted
#: estimator with ``predict_proba``. Trained by the same Tune trainable, one fit per trial.
CLASSICAL: dict[str, Target] = {
    "svm": "genre_ray.models.classical:svm",
    "random_forest": "genre_ray.models.classical:random_forest",
    "knn": "genre_ray.models.classical:knn",
    "logreg": "genre_ray.models.classical:logreg",
    "gboost": "genre_ray.models.classical:gboost",
}
_SHIPPED = {**REGISTRY, **CLASSICAL}


class UnknownModelError(KeyError):
    """A model name that is not in the registry; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


def model_names() -> tuple[str, ...]:
    """Every registered model, the neural ones first."""
    return (*REGISTRY, *CLASSICAL)


def _target(name: str) -> Target:
    try:
        return REGISTRY[name] if name in REGISTRY else CLASSICAL[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(sorted(model_names()))}") from None


@cache
def _read(target: str) -> ModelSpec:
    module, attr = target.split(":")
    return read_spec(module, attr)


def spec_of(name: str) -> ModelSpec:
    """The spec of model ``name``: its inputs, its hyperparameters' rules and defaults, its data inputs.

    Read from the model's source without importing it (no torch, no scikit-learn).

    Raises:
        UnknownModelError: for a name not in the registry.
        SpecError: for a registered model without a valid :func:`~genre_ray.models.spec.model_spec`.
    """
    target = _target(name)
    if isinstance(target, str):
        return _read(target)
    found = getattr(target, "spec", None)
    if not isinstance(found, ModelSpec):
        raise SpecError(f"model {name!r}: {target!r} is not decorated with @model_spec(...)")
    return found


class _Inputs(Mapping[str, tuple[str, ...]]):
    """model name -> the input families it takes, read from each model's spec."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return spec_of(name).inputs

    def __iter__(self) -> Iterator[str]:
        return iter(model_names())

    def __len__(self) -> int:
        return len(model_names())


#: The input families each model accepts; the config refuses any other pairing before a search.
INPUTS: Mapping[str, tuple[str, ...]] = _Inputs()


def accepts(model: str, kind: str) -> bool:
    """Whether ``model`` can be trained on feature ``kind``."""
    return FAMILY[kind] in spec_of(model).inputs


def model_class(name: str) -> Any:
    """The class (or classical builder) registered under ``name``."""
    target = _target(name)
    if not isinstance(target, str):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def build_model(name: str, n_classes: int, input_shape: tuple[int, ...],
                data_inputs: Mapping[str, Any] | None = None, **params: Any) -> Any:
    """Instantiate a registered model.

    Args:
        name: a key of :data:`REGISTRY` or :data:`CLASSICAL`.
        n_classes: the number of genres.
        input_shape: the feature shape of one clip, without the batch dimension.
        data_inputs: what the data tells a model beyond its shape (``groups``:
            :data:`~genre_ray.models.spec.DATA_INPUTS`); each model gets those its spec declares.
        **params: the model's hyperparameters.

    Returns:
        A ``torch.nn.Module`` mapping ``(batch, *input_shape)`` to ``(batch, n_classes)`` logits (or
        an unfitted estimator, for a classical model).
    """
    wanted = {k: v for k, v in (data_inputs or {}).items() if k in spec_of(name).data_inputs}
    return model_class(name)(n_classes=n_classes, input_shape=tuple(input_shape), **wanted, **params)


def entries(names: list[str]) -> dict[str, dict[str, Target]]:
    """The registrations of ``names`` that are not the package's own, for :func:`register` in a trial's
    process; empty when every model ships with the package."""
    added = {n: _target(n) for n in names if _SHIPPED.get(n) != _target(n)}
    return {kind: {n: t for n, t in added.items() if n in table}
            for kind, table in (("neural", REGISTRY), ("classical", CLASSICAL)) if set(added) & set(table)}


def register(added: Mapping[str, Mapping[str, Target]]) -> None:
    """Register what :func:`entries` gave, in this process (a trial's worker)."""
    REGISTRY.update(added.get("neural", {}))
    CLASSICAL.update(added.get("classical", {}))
