"""Search space (validated YAML) -> an Optuna define-by-run function for ``OptunaSearch``.

Each searchable value becomes one ``trial.suggest_*`` call under its dotted name
(``train.lr``, ``model.depth``); fixed values are returned as constants, so every trial's
config holds the full set of hyperparameters whether searched or not.

The space is conditional when ``model.name`` is a choice (the zoo): the model is suggested
first, then only that model's parameters, under ``model.<name>.<param>``, and the feature
variant among those the model can take (``features.kind.<name>``). A classical
(scikit-learn) model gets no optimizer, epochs or augmentation parameters at all. Optuna's TPE
models each parameter only over the trials that have it. Every trial's config ends with plain
``model.name`` and ``features.kind``; :func:`resolve` reads a config back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genre_ray.config import CLASSICAL_TRAIN_KEYS, LEARNED_AGGREGATIONS, Dist, SearchConfig
from genre_ray.models import CLASSICAL

__all__ = ["DefineByRun", "TrialPlan", "define_by_run", "resolve"]


def _suggest(trial: Any, name: str, dist: Dist) -> Any:
    if dist.kind == "choice":
        return trial.suggest_categorical(name, list(dist.args))
    low, high = dist.args
    if dist.kind == "int":
        return trial.suggest_int(name, int(low), int(high))
    return trial.suggest_float(name, float(low), float(high), log=dist.kind == "loguniform")


def _choose(trial: Any, name: str, options: list[Any]) -> Any:
    """One of ``options``: suggested when there is a choice, else the only one (not a parameter)."""
    return trial.suggest_categorical(name, options) if len(options) > 1 else options[0]


class DefineByRun:
    """Picklable define-by-run function (Tune pickles the searcher, space included, to resume).

    Args:
        models: model name -> its parameters (Dist or constant), in the YAML's order.
        kinds: model name -> the feature variants it may use.
        train: ``train.<key>`` -> Dist or constant.
    """

    def __init__(self, models: dict[str, dict[str, Any]], kinds: dict[str, list[str]],
                 train: dict[str, Any]) -> None:
        self.models = models
        self.kinds = kinds
        self.train = train

    def __call__(self, trial: Any) -> dict[str, Any]:
        names = list(self.models)
        zoo = len(names) > 1
        model = _choose(trial, "model.name", names)
        constants: dict[str, Any] = {"model.name": model}
        prefix = f"model.{model}." if zoo else "model."
        for key, value in self.models[model].items():
            if isinstance(value, Dist):
                _suggest(trial, prefix + key, value)
            else:
                constants[prefix + key] = value
        constants["features.kind"] = _choose(trial, f"features.kind.{model}" if zoo else "features.kind",
                                             self.kinds[model])
        classical = model in CLASSICAL
        for name, value in self.train.items():
            key = name.split(".", 1)[1]
            if classical and key not in CLASSICAL_TRAIN_KEYS:
                continue  # a classical model has no optimizer, epochs or augmentation
            if classical and key == "aggregation" and isinstance(value, Dist):
                allowed = [a for a in value.args if a not in LEARNED_AGGREGATIONS]
                if allowed != list(value.args):  # its own parameter: a narrower set of choices
                    constants[name] = _choose(trial, f"{name}.classical", allowed)
                    continue
            if isinstance(value, Dist):
                _suggest(trial, name, value)
            else:
                constants[name] = value
        return constants


def define_by_run(cfg: SearchConfig) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run function of a search space.

    Args:
        cfg: the validated config.

    Returns:
        ``fn(optuna_trial) -> constants``, as ``OptunaSearch(space=fn)`` expects.
    """
    return DefineByRun(dict(cfg.model.by_model), {m: cfg.kinds_for(m) for m in cfg.model_names},
                       cfg.searchable())


@dataclass(frozen=True)
class TrialPlan:
    """What one trial trains: the model, its parameters, the feature variant and the train settings."""

    model: str
    kind: str
    params: dict[str, Any]
    train: dict[str, Any]

    @property
    def classical(self) -> bool:
        return self.model in CLASSICAL


def resolve(config: dict[str, Any]) -> TrialPlan:
    """A trial's flat config (suggested values and constants) -> its :class:`TrialPlan`."""
    model = config["model.name"]
    own = f"model.{model}."
    if any(k.startswith(own) for k in config):  # a zoo: parameters are per model
        params = {k[len(own):]: v for k, v in config.items() if k.startswith(own)}
    else:
        params = {k[6:]: v for k, v in config.items() if k.startswith("model.") and k.count(".") == 1
                  and k != "model.name"}
    train = {k[6:]: v for k, v in config.items() if k.startswith("train.") and k.count(".") == 1}
    return TrialPlan(model, config["features.kind"], params, train)
