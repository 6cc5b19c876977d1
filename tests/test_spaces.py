"""The YAML space becomes an Optuna define-by-run function with the right distributions."""

from __future__ import annotations

import pickle

import optuna

from genre_ray.config import parse_config
from genre_ray.config.spaces import define_by_run, resolve


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
    plan = resolve({**trial.params, **constants})
    assert 1e-4 <= plan.train["lr"] <= 1e-2 and 2 <= plan.params["depth"] <= 4
    assert plan.model == "cnn2d" and plan.kind == "logmel" and not plan.classical


def test_zoo_space_is_conditional_on_the_model() -> None:
    """Each model gets only its own parameters and the feature kinds it can take; classical
    models get no optimizer or epochs, and a narrower aggregation choice."""
    cfg = parse_config({
        "features": {"kind": {"choice": ["logmel", "mfcc", "stats"]}},
        "model": {"name": {"choice": ["cnn2d", "mlp", "svm"]},
                  "params": {"cnn2d": {"depth": {"int": [2, 4]}}, "svm": {"C": {"loguniform": [0.1, 10.0]}}}},
        "train": {"lr": {"loguniform": [1e-4, 1e-2]}, "aggregation": {"choice": ["mean", "vote", "gru"]}},
    })
    space = pickle.loads(pickle.dumps(define_by_run(cfg)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = {}
    for _ in range(40):
        trial = study.ask()
        constants = space(trial)
        plan = resolve({**trial.params, **constants})
        seen.setdefault(plan.model, set()).add(plan.kind)
        if plan.model == "cnn2d":
            assert 2 <= plan.params["depth"] <= 4 and "model.cnn2d.depth" in trial.params
            assert plan.kind in ("logmel", "mfcc") and "train.lr" in trial.params
        elif plan.model == "svm":
            assert plan.kind == "stats" and set(plan.params) == {"C", "gamma", "kernel"}
            assert "train.lr" not in trial.params and "train.epochs" not in {**trial.params, **constants}
            assert plan.train["aggregation"] in ("mean", "vote")
            assert not any(k.startswith("model.cnn2d") for k in trial.params)
        study.tell(trial, 0.5)
    assert seen["cnn2d"] == {"logmel", "mfcc"} and seen["svm"] == {"stats"}
    assert seen["mlp"] == {"logmel", "mfcc", "stats"}
