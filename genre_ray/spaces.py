"""Search space (validated YAML) -> an Optuna define-by-run function for ``OptunaSearch``.

Each searchable value becomes one ``trial.suggest_*`` call under its dotted name
(``train.lr``, ``model.depth``); fixed values are returned as constants, so every trial's
config holds the full set of hyperparameters whether searched or not.
"""

from __future__ import annotations

from typing import Any, Callable

from genre_ray.config import Dist, SearchConfig

__all__ = ["DefineByRun", "define_by_run", "split_params"]


def _suggest(trial: Any, name: str, dist: Dist) -> Any:
    if dist.kind == "choice":
        return trial.suggest_categorical(name, list(dist.args))
    low, high = dist.args
    if dist.kind == "int":
        return trial.suggest_int(name, int(low), int(high))
    return trial.suggest_float(name, float(low), float(high), log=dist.kind == "loguniform")


class DefineByRun:
    """Picklable define-by-run function (Tune pickles the searcher, space included, to resume)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __call__(self, trial: Any) -> dict[str, Any]:
        constants = {}
        for name, value in self.values.items():
            if isinstance(value, Dist):
                _suggest(trial, name, value)
            else:
                constants[name] = value
        return constants


def define_by_run(cfg: SearchConfig) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run function of a search space.

    Args:
        cfg: the validated config; its ``searchable()`` values are Dist or constants.

    Returns:
        ``fn(optuna_trial) -> constants``, as ``OptunaSearch(space=fn)`` expects.
    """
    return DefineByRun(cfg.searchable())


def split_params(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's flat config -> ``(train settings, model params)``."""
    train = {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith("train.")}
    model = {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith("model.")}
    return train, model
