"""Each registered model trains on every input family it accepts; each classical builder fits and predicts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from genre_ray.models import CLASSICAL, FAMILY, INPUTS, REGISTRY, build_model, model_class
from genre_ray.models.classical import (
    balanced_weights,
    class_probabilities,
    fit_estimator,
    fit_predict_proba,
    oversample,
)

#: A tiny per-clip input shape for each input family.
SHAPES: dict[str, tuple[int, ...]] = {"spectrogram": (40, 32), "stacked": (40, 32), "vector": (57,),
                                      "waveform": (1, 800), "pretrained_input": (96, 187)}
#: Hyperparameters a model needs for a family beyond its defaults.
EXTRA: dict[tuple[str, str], dict[str, Any]] = {("combined", "stacked"): {"groups": (24, 10, 6)}}

CASES = [(name, family) for name in sorted(REGISTRY) for family in INPUTS[name]]


def _model(name: str, family: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A model with default hyperparameters, a batch of 3 and its labels."""
    torch.manual_seed(seed)
    shape = SHAPES[family]
    model = build_model(name, n_classes=4, input_shape=shape, **EXTRA.get((name, family), {}))
    return model, torch.randn(3, *shape), torch.tensor([0, 3, 1])


def test_registries_agree() -> None:
    assert set(REGISTRY) | set(CLASSICAL) == set(INPUTS)
    assert not set(REGISTRY) & set(CLASSICAL)
    used = {family for families in INPUTS.values() for family in families}
    assert used <= set(FAMILY.values()) and all(INPUTS.values())
    assert set(FAMILY.values()) == set(SHAPES)  # every family is exercised below


@pytest.mark.parametrize(("name", "family"), CASES)
def test_forward_backward_reaches_every_parameter(name: str, family: str) -> None:
    model, x, y = _model(name, family)
    logits = model(x)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, y).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    for pname, p in params:
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize(("name", "family"), CASES)
def test_forward_is_head_of_embed(name: str, family: str) -> None:
    model, x, _ = _model(name, family)
    assert isinstance(model.head, nn.Linear)
    model.eval()
    with torch.no_grad():
        emb = model.embed(x)
        assert emb.ndim == 2 and emb.shape == (3, model.head.in_features)
        torch.testing.assert_close(model.head(emb), model(x))


@pytest.mark.parametrize(("name", "family"), CASES)
def test_optimizer_steps_lower_the_loss(name: str, family: str) -> None:
    # Eval mode keeps the loss a fixed function of the weights (no dropout, fixed batch-norm
    # statistics), so a few small Adam steps on one batch must lower it.
    model, x, y = _model(name, family)
    model.eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    before = loss().item()
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < before


@pytest.mark.parametrize(("name", "family"), CASES)
def test_builds_deterministically(name: str, family: str) -> None:
    a, x, _ = _model(name, family)
    b, _, _ = _model(name, family)
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def _blobs(per_class: int, seed: int, classes: tuple[int, ...] = (0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters in 6 dimensions, one per class."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(scale=4.0, size=(3, 6))
    y = np.repeat(np.array(classes), per_class)
    return (centres[y] + rng.normal(size=(len(y), 6))).astype(np.float32), y


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_classical_fits_and_predicts_all_classes(name: str) -> None:
    x_train, y_train = _blobs(25, seed=0)
    x_val, y_val = _blobs(10, seed=1)
    estimator = build_model(name, n_classes=3, input_shape=(6,), seed=0)  # as the trainer builds it
    assert hasattr(estimator, "predict_proba") and not hasattr(estimator, "classes_")  # unfitted
    proba = fit_predict_proba(estimator, x_train, y_train, x_val, n_classes=3)
    assert proba.shape == (30, 3) and np.isfinite(proba).all() and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba.argmax(axis=1) == y_val).mean() >= 0.8  # chance is 1/3


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_classical_absent_class_gets_a_zero_column(name: str) -> None:
    x_train, y_train = _blobs(25, seed=0, classes=(0, 2))
    x_val, y_val = _blobs(10, seed=1, classes=(0, 2))
    proba = fit_predict_proba(model_class(name)(seed=3), x_train, y_train, x_val, n_classes=4)
    assert proba.shape == (20, 4)
    assert (proba[:, [1, 3]] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba.argmax(axis=1) == y_val).mean() >= 0.8  # the columns are not shuffled


@pytest.mark.parametrize("name", sorted(CLASSICAL))
def test_classical_is_seeded(name: str) -> None:
    x_train, y_train = _blobs(25, seed=0)
    x_val, _ = _blobs(5, seed=1)
    runs = [fit_predict_proba(model_class(name)(seed=7), x_train, y_train, x_val, 3) for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_classical_hyperparameters_reach_the_estimator() -> None:
    svm = model_class("svm")(C=3.0, gamma=0.0, kernel="linear").steps[-1][1].estimator
    assert (svm.C, svm.gamma, svm.kernel) == (3.0, "scale", "linear")
    assert model_class("svm")(gamma=0.5).steps[-1][1].estimator.gamma == 0.5
    forest = model_class("random_forest")(n_estimators=7, max_depth=0, max_features=0.5, seed=4)[-1]
    assert (forest.n_estimators, forest.max_depth, forest.max_features, forest.n_jobs, forest.random_state) \
        == (7, None, 0.5, 1, 4)
    assert model_class("random_forest")(max_depth=3)[-1].max_depth == 3
    neighbours = model_class("knn")(n_neighbors=3, weights="uniform")[-1]
    assert (neighbours.n_neighbors, neighbours.weights) == (3, "uniform")
    assert model_class("logreg")(C=0.1)[-1].C == 0.1
    boost = model_class("gboost")(learning_rate=0.3, max_iter=20, max_leaf_nodes=7, seed=5)[-1]
    assert (boost.learning_rate, boost.max_iter, boost.max_leaf_nodes, boost.random_state) == (0.3, 20, 7, 5)
    for name in CLASSICAL:
        assert type(model_class(name)()[0]).__name__ == "StandardScaler"


def test_fit_predict_proba_refuses_bad_labels_and_passes_weights() -> None:
    x, y = _blobs(20, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fit_predict_proba(model_class("logreg")(), x, y, x, n_classes=2)
    with pytest.raises(ValueError, match="sample weights"):
        fit_predict_proba(model_class("knn")(), x, y, x, 3, sample_weight=np.ones(len(y)))
    # Weighting class 0 out of the fit leaves the model unable to predict it.
    weights = np.where(y == 0, 1e-6, 1.0)
    proba = fit_predict_proba(model_class("logreg")(C=100.0), x, y, x, 3, sample_weight=weights)
    unweighted = fit_predict_proba(model_class("logreg")(C=100.0), x, y, x, 3)
    assert proba[y == 0, 0].mean() < unweighted[y == 0, 0].mean() - 0.2


def _imbalanced(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes 0 (60 examples) and 1 (6 examples): class 1 loses unless rebalanced."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(60, np.int64), np.ones(6, np.int64)]
    return (rng.normal(size=(66, 2)) + 0.8 * y[:, None]).astype(np.float32), y


def test_balanced_weights_and_oversampling() -> None:
    y = np.array([0, 0, 0, 2])
    weights = balanced_weights(y)
    np.testing.assert_allclose(weights, [4 / 6, 4 / 6, 4 / 6, 2.0])  # each class weighs 2 in total
    idx = oversample(np.array([0, 0, 0, 0, 1, 2, 2]), seed=0)
    assert sorted(idx[:7]) == list(range(7))  # every example kept once
    assert np.bincount(np.array([0, 0, 0, 0, 1, 2, 2])[idx]).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(idx, oversample(np.array([0, 0, 0, 0, 1, 2, 2]), seed=0))


@pytest.mark.parametrize("name", ["logreg", "knn"])  # sample weights; k-NN falls back to oversampling
@pytest.mark.parametrize("imbalance", ["class_weight", "balanced_sampling"])
def test_fit_estimator_corrects_imbalance(name: str, imbalance: str) -> None:
    x, y = _imbalanced()
    params = {"n_neighbors": 15, "weights": "uniform"} if name == "knn" else {}
    plain = fit_estimator(model_class(name)(**params), x, y, "none")
    fixed = fit_estimator(model_class(name)(**params), x, y, imbalance, seed=1)
    # The minority class gets a much larger share of the predictions once rebalanced.
    assert fixed.predict(x).mean() > plain.predict(x).mean() + 0.1


def test_fit_estimator_refuses_unknown_imbalance() -> None:
    x, y = _imbalanced()
    with pytest.raises(ValueError, match="valid: none, class_weight, balanced_sampling"):
        fit_estimator(model_class("logreg")(), x, y, "smote")


def test_class_probabilities_places_known_classes() -> None:
    x, y = _blobs(15, seed=0, classes=(1, 2))
    est = fit_estimator(model_class("logreg")(), x, y)
    proba = class_probabilities(est, x, 3)
    assert (proba[:, 0] == 0).all() and (proba.argmax(axis=1) == y).mean() > 0.9
    with pytest.raises(ValueError, match="outside"):
        class_probabilities(est, x, 2)


def test_svm_with_one_example_of_a_class_still_gives_probabilities() -> None:
    """Platt calibration needs 2+ examples per class; with fewer the SVM falls back to a softmax."""
    from genre_ray.models.classical import SoftmaxSVC, class_probabilities, fit_estimator, svm

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c * 3.0, 1.0, size=(n, 4)) for c, n in enumerate([6, 6, 1])])
    y = np.repeat([0, 1, 2], [6, 6, 1])
    est = fit_estimator(svm(), x, y, "class_weight")
    assert isinstance(est[-1], SoftmaxSVC)
    probs = class_probabilities(est, x, 3)
    assert np.allclose(probs.sum(axis=1), 1) and (probs.argmax(axis=1)[:12] == y[:12]).mean() >= 0.9
    # below 10 examples a class, the softmax keeps the SVM's own decisions (Platt on folds of 1-2
    # examples a class would not); from 10 on the probabilities are calibrated
    few = fit_estimator(svm(), x[:12], y[:12], "none")
    assert isinstance(few[-1], SoftmaxSVC)
    assert np.array_equal(class_probabilities(few, x[:12], 3).argmax(axis=1)[:12], few.predict(x[:12]))
    x2 = np.concatenate([rng.normal(c * 3.0, 1.0, size=(10, 4)) for c in range(2)])
    calibrated = fit_estimator(svm(), x2, np.repeat([0, 1], 10), "none")
    assert not isinstance(calibrated[-1], SoftmaxSVC)


def test_knn_with_more_neighbours_than_examples_uses_them_all() -> None:
    from genre_ray.models.classical import class_probabilities, fit_estimator, knn

    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    y = np.array([0, 0, 1, 1])
    est = fit_estimator(knn(n_neighbors=25), x, y, "none")
    assert est[-1].n_neighbors == 4
    assert class_probabilities(est, np.array([[0.05], [5.05]]), 2).argmax(axis=1).tolist() == [0, 1]
