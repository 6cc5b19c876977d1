"""The YAML space becomes an Optuna define-by-run function with the right distributions."""

from __future__ import annotations

import pickle

import optuna

from genre_ray.config import parse_config
from genre_ray.spaces import define_by_run, split_params


def test_define_by_run_suggests_what_the_yaml_says() -> None:
    cfg = parse_config({
        "model": {"params": {"depth": {"int": [2, 4]}, "dropout": {"uniform": [0.0, 0.5]}}},
        "train": {"lr": {"loguniform": [1e-4, 1e-2]}, "batch_size": {"choice": [16, 32, 64]}, "epochs": 3},
    })
    space = pickle.loads(pickle.dumps(define_by_run(cfg)))  # Tune pickles it to resume
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    constants = space(trial)
    dists = trial.distributions
    assert isinstance(dists["train.lr"], optuna.distributions.FloatDistribution) and dists["train.lr"].log
    assert dists["train.batch_size"].choices == (16, 32, 64)
    assert isinstance(dists["model.depth"], optuna.distributions.IntDistribution)
    assert constants["train.epochs"] == 3 and "train.lr" not in constants
    train, model = split_params({**trial.params, **constants})
    assert 1e-4 <= train["lr"] <= 1e-2 and 2 <= model["depth"] <= 4
