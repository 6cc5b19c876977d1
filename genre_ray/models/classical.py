"""Classical scikit-learn classifiers on feature vectors, the baselines of the GTZAN feature-table projects.

Support vector machines, random forests, k-nearest neighbours, logistic regression and gradient
boosting on the Kaggle ``features_30_sec.csv`` style columns (or song statistics, or flattened
clips): the feature-vector approach of Tzanetakis and Cook, "Musical genre classification of audio
signals" (IEEE TSAP, 2002), who classified timbre, rhythm and pitch statistics with k-NN and
Gaussian mixtures, and of the many student projects after it.

Each builder's keyword arguments are its searchable hyperparameters plus ``seed`` (and the
``n_classes`` and ``input_shape`` that :func:`~genre_ray.models.build_model` passes every model);
it returns an unfitted ``Pipeline(StandardScaler(), estimator)`` with ``predict_proba``, fitted on
2-D ``(examples, features)`` float arrays. :func:`fit_estimator` fits one with the trainer's
class-imbalance correction; :func:`class_probabilities` and :func:`fit_predict_proba` give
probabilities with a column for every class of the task, including classes absent from training.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import has_fit_parameter

from genre_ray.models.spec import Float, Int, OneOf, model_spec

__all__ = ["IMBALANCE", "balanced_weights", "class_probabilities", "fit_estimator", "fit_predict_proba",
           "gboost", "knn", "logreg", "oversample", "random_forest", "SoftmaxSVC", "svm"]

log = logging.getLogger(__name__)

#: Class-imbalance corrections :func:`fit_estimator` knows (the ``train.imbalance`` setting).
IMBALANCE = ("none", "class_weight", "balanced_sampling")


@model_spec(inputs=("vector",), C=Float(0.0, None, lo_open=True), gamma=Float(0.0, None),  # gamma 0: "scale"
            kernel=OneOf("rbf", "linear", "poly", "sigmoid"))
def svm(C: float = 1.0, gamma: float = 0.0, kernel: str = "rbf", *, seed: int = 0,
        n_classes: int | None = None, input_shape: tuple[int, ...] | None = None) -> Pipeline:
    """Standardisation -> support vector classifier with Platt-scaled probabilities.

    The probabilities come from ``CalibratedClassifierCV(SVC(), ensemble=False)``: sigmoid
    calibration on 5-fold cross-validated decision values, then one SVC refitted on all the data.
    That is what ``SVC(probability=True)`` does inside libsvm, and the form scikit-learn recommends
    since it deprecated ``probability`` (1.9). Every class needs at least 2 training examples.

    Args:
        C: inverse regularisation strength (search log-uniformly, about 0.01 to 100).
        gamma: kernel coefficient of the ``rbf``, ``poly`` and ``sigmoid`` kernels; 0 means
            ``"scale"``, i.e. ``1 / (n_features * X.var())``.
        kernel: ``"rbf"``, ``"linear"``, ``"poly"`` or ``"sigmoid"``.
        seed: accepted for a uniform signature; the folds are not shuffled, so the fit is deterministic.
        n_classes, input_shape: passed by :func:`~genre_ray.models.build_model` to every model; unused,
            since scikit-learn reads both from the data.

    Returns:
        An unfitted pipeline.
    """
    del seed, n_classes, input_shape  # nothing random: unshuffled stratified folds, deterministic libsvm
    svc = SVC(C=C, gamma="scale" if gamma == 0 else gamma, kernel=kernel)
    return make_pipeline(StandardScaler(), CalibratedClassifierCV(svc, ensemble=False))


@model_spec(inputs=("vector",), n_estimators=Int(1, 5000), max_depth=Int(0, 1000),  # max_depth 0: unlimited
            max_features=Float(0.0, 1.0, lo_open=True))
def random_forest(n_estimators: int = 200, max_depth: int = 0, max_features: float = 0.3, *, seed: int = 0,
                  n_classes: int | None = None, input_shape: tuple[int, ...] | None = None) -> Pipeline:
    """Standardisation -> random forest (single-threaded: Ray runs trials in parallel).

    Args:
        n_estimators: number of trees.
        max_depth: maximum tree depth; 0 means unlimited.
        max_features: fraction of the features considered at each split, in (0, 1].
        seed: random state of the bootstrap and feature sampling.
        n_classes, input_shape: passed by :func:`~genre_ray.models.build_model` to every model; unused,
            since scikit-learn reads both from the data.

    Returns:
        An unfitted pipeline.
    """
    del n_classes, input_shape
    forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth or None,
                                    max_features=max_features, n_jobs=1, random_state=seed)
    return make_pipeline(StandardScaler(), forest)


@model_spec(inputs=("vector",), n_neighbors=Int(1, 1000), weights=OneOf("uniform", "distance"))
def knn(n_neighbors: int = 5, weights: str = "distance", *, seed: int = 0, n_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None) -> Pipeline:
    """Standardisation -> k-nearest neighbours (Euclidean distance on standardised features).

    Args:
        n_neighbors: neighbours that vote.
        weights: ``"distance"`` (closer neighbours weigh more) or ``"uniform"``.
        seed: accepted for a uniform signature; k-NN is deterministic.
        n_classes, input_shape: passed by :func:`~genre_ray.models.build_model` to every model; unused,
            since scikit-learn reads both from the data.

    Returns:
        An unfitted pipeline.
    """
    del seed, n_classes, input_shape
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=n_neighbors, weights=weights))


@model_spec(inputs=("vector",), C=Float(0.0, None, lo_open=True))
def logreg(C: float = 1.0, *, seed: int = 0, n_classes: int | None = None,
           input_shape: tuple[int, ...] | None = None) -> Pipeline:
    """Standardisation -> multinomial logistic regression (L2, lbfgs).

    Args:
        C: inverse regularisation strength.
        seed: random state (unused by lbfgs; kept for a uniform signature).
        n_classes, input_shape: passed by :func:`~genre_ray.models.build_model` to every model; unused,
            since scikit-learn reads both from the data.

    Returns:
        An unfitted pipeline.
    """
    del n_classes, input_shape
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


@model_spec(inputs=("vector",), learning_rate=Float(0.0, 1.0, lo_open=True), max_iter=Int(1, 5000),
            max_leaf_nodes=Int(2, 1024))
def gboost(learning_rate: float = 0.1, max_iter: int = 100, max_leaf_nodes: int = 31, *, seed: int = 0,
           n_classes: int | None = None, input_shape: tuple[int, ...] | None = None) -> Pipeline:
    """Standardisation -> histogram gradient boosting (LightGBM-style trees).

    Args:
        learning_rate: shrinkage of each tree.
        max_iter: boosting iterations (trees per class).
        max_leaf_nodes: leaves per tree.
        seed: random state (of early stopping's validation split, used above 10,000 examples).
        n_classes, input_shape: passed by :func:`~genre_ray.models.build_model` to every model; unused,
            since scikit-learn reads both from the data.

    Returns:
        An unfitted pipeline.
    """
    del n_classes, input_shape
    boost = HistGradientBoostingClassifier(learning_rate=learning_rate, max_iter=max_iter,
                                           max_leaf_nodes=max_leaf_nodes, random_state=seed)
    return make_pipeline(StandardScaler(), boost)


def class_probabilities(estimator: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities of a fitted classifier with one column per class, ``0 .. n_classes - 1`` in order.

    A class absent from the training labels is unknown to the estimator (not in ``classes_``); its
    column is 0.

    Args:
        estimator: a fitted classifier with ``predict_proba`` and integer ``classes_``.
        x: ``(n, features)`` examples.
        n_classes: the number of classes of the task.

    Returns:
        ``(n, n_classes)`` float64 probabilities; each row sums to 1.

    Raises:
        ValueError: if the estimator knows a class outside ``[0, n_classes)``.
    """
    classes = np.asarray(estimator.classes_)
    if classes.size and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"the estimator knows classes {classes.tolist()}, outside [0, {n_classes})")
    out = np.zeros((len(x), n_classes), dtype=np.float64)
    out[:, classes.astype(np.int64)] = estimator.predict_proba(x)
    return out


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-example weights ``n / (k * count[class])``, ``k`` the classes present: each class weighs the
    same in total, as the neural models' ``class_weight`` loss does."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return len(y) / (len(classes) * counts[inverse])


def oversample(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices that keep every example and repeat random ones of the smaller classes (with
    replacement) until every class is as frequent as the largest."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    top = counts.max()
    extra = [rng.choice(np.flatnonzero(y == c), top - n) for c, n in zip(classes, counts, strict=True)]
    return np.concatenate([np.arange(len(y)), *extra]).astype(np.int64)


def _takes_weights(estimator: Any) -> tuple[bool, str]:
    """Whether the (last step of the) estimator takes ``sample_weight``, and the fit keyword for it."""
    name, last = estimator.steps[-1] if isinstance(estimator, Pipeline) else ("", estimator)
    return has_fit_parameter(last, "sample_weight"), f"{name}__sample_weight" if name else "sample_weight"


def fit_estimator(estimator: Any, x: np.ndarray, y: np.ndarray, imbalance: str = "none",
                  seed: int = 0) -> Any:
    """Fit ``estimator`` on ``(x, y)``, correcting class imbalance as the neural trainer does.

    Args:
        estimator: an unfitted pipeline from one of the builders.
        x: ``(n, features)`` training examples.
        y: ``(n,)`` integer classes.
        imbalance: ``"none"``; ``"class_weight"``: :func:`balanced_weights` as sample weights (an
            estimator that takes none, k-NN, is fitted on :func:`oversample` instead);
            ``"balanced_sampling"``: fitted on :func:`oversample`.
        seed: random state of the oversampling.

    Returns:
        The fitted estimator.

    Raises:
        ValueError: for an unknown ``imbalance``.
    """
    if imbalance not in IMBALANCE:
        raise ValueError(f"unknown imbalance {imbalance!r}; valid: {', '.join(IMBALANCE)}")
    y = np.asarray(y)
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(final, KNeighborsClassifier) and final.n_neighbors > len(y):
        log.info("knn: n_neighbors %d is more than the %d training examples; using %d", final.n_neighbors,
                 len(y), len(y))
        final.set_params(n_neighbors=len(y))
    takes_weights, keyword = _takes_weights(estimator)
    if imbalance == "class_weight" and takes_weights:
        return _calibration_folds(estimator, y).fit(x, y, **{keyword: balanced_weights(y)})
    if imbalance != "none":
        idx = oversample(y, seed)
        return _calibration_folds(estimator, y[idx]).fit(x[idx], y[idx])
    return _calibration_folds(estimator, y).fit(x, y)


#: Below this many training examples in its smallest class, an SVM's probabilities are a softmax of
#: its decision scores instead of a Platt calibration: calibrating on folds of one or two examples a
#: class gives probabilities whose argmax often disagrees with the SVM's own decision (measured on
#: the 30 GTZAN dev songs, one 30-s embedding a song: validation accuracy 0.40 calibrated).
MIN_CALIBRATION_EXAMPLES = 10


def _calibration_folds(estimator: Any, y: np.ndarray) -> Any:
    """Fewer calibration folds (5 at most) when the smallest class has fewer than 5 examples; no
    calibration (a softmax of the decision scores) below :data:`MIN_CALIBRATION_EXAMPLES`."""
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(final, CalibratedClassifierCV):
        counts = np.bincount(y)
        smallest = int(counts[counts > 0].min()) if counts.any() else 0
        if smallest < MIN_CALIBRATION_EXAMPLES:  # too few to calibrate on held-out folds
            log.info("svm: the smallest class has %d training example(s), too few to calibrate probabilities; "
                     "using a softmax of the SVM's decision scores", smallest)
            estimator.steps[-1] = (estimator.steps[-1][0], SoftmaxSVC(**final.estimator.get_params()))
            return estimator
        final.set_params(cv=min(5, smallest))
    return estimator


class SoftmaxSVC(SVC):
    """An SVC whose ``predict_proba`` is the softmax of its one-vs-rest decision scores.

    Uncalibrated; used only when a class has a single training example, where cross-validated
    (Platt) calibration is impossible.
    """

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision_function(x)
        if scores.ndim == 1:  # two classes: one score, positive for classes_[1]
            scores = np.stack([-scores, scores], axis=1) / 2
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)


def fit_predict_proba(estimator: Any, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      n_classes: int, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Fit ``estimator`` and return its class probabilities on ``x_val``, one column per class.

    A class absent from ``y_train`` is unknown to the fitted estimator; its column is 0, so the
    columns are always the classes ``0 .. n_classes - 1`` in order (:func:`class_probabilities`).

    Args:
        estimator: an unfitted pipeline from one of the builders (any classifier with
            ``predict_proba`` and ``classes_`` works).
        x_train: ``(n_train, features)`` training examples.
        y_train: ``(n_train,)`` integer classes in ``[0, n_classes)``.
        x_val: ``(n_val, features)`` examples to score.
        n_classes: the number of classes of the task.
        sample_weight: optional ``(n_train,)`` weights, passed to the pipeline's last step.

    Returns:
        ``(n_val, n_classes)`` float64 probabilities; each row sums to 1.

    Raises:
        ValueError: for labels outside ``[0, n_classes)``, or weights the estimator cannot take.
    """
    y_train = np.asarray(y_train)
    if y_train.size and (y_train.min() < 0 or y_train.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes}), got {y_train.min()} .. {y_train.max()}")
    fit_params: dict[str, Any] = {}
    if sample_weight is not None:
        takes_weights, keyword = _takes_weights(estimator)
        if not takes_weights:
            raise ValueError(f"{type(estimator).__name__} ({estimator}) does not take sample weights")
        fit_params[keyword] = sample_weight
    estimator.fit(x_train, y_train, **fit_params)
    return class_probabilities(estimator, x_val, n_classes)
