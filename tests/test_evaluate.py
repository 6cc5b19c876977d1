"""genre_ray.evaluate: the scores every trial reports are scikit-learn's, computed without it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss, roc_auc_score

from genre_ray.evaluate import classification_scores


def _sklearn(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    n = probs.shape[1]
    pred = probs.argmax(axis=1)
    p = np.clip(probs.astype(np.float64), 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = {"acc": accuracy_score(y, pred), "bacc": balanced_accuracy_score(y, pred),
               "f1": f1_score(y, pred, labels=list(range(n)), average="macro", zero_division=0),
               "loss": log_loss(y, p, labels=list(range(n)))}
    if n == 2 and len(set(y.tolist())) == 2:
        out["auc"] = roc_auc_score(y, p[:, 1])
    return out


@pytest.mark.parametrize("seed", range(40))
def test_scores_equal_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    songs = int(rng.integers(1, 30))
    # Some classes absent from the truth, some from the predictions, ties in the scores (rounded).
    present = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)
    y = rng.choice(present, size=songs)
    probs = rng.dirichlet(np.ones(n_classes) * 0.5, size=songs).astype(np.float32)
    if seed % 3 == 0:
        probs = np.round(probs, 1) + 1e-3
    ours = classification_scores(y, probs)
    theirs = _sklearn(y, probs)
    assert ours.keys() == theirs.keys()
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(v, abs=1e-9), (k, y.tolist(), probs.tolist())


def test_prefix_and_a_perfect_binary_split() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]], dtype=np.float32)
    scores = classification_scores(y, probs, prefix="val_song_")
    assert scores["val_song_acc"] == scores["val_song_bacc"] == scores["val_song_f1"] == scores["val_song_auc"] == 1.0
    assert 0 < scores["val_song_loss"] < 0.6
