"""Metrics, clip-to-song aggregation and plots. No Ray, no MLflow.

Song level: the class probabilities of a song's clips are combined (mean, vote or max; the
learned GRU/LSTM aggregator is in :mod:`genre_ray.training.aggregate`) and the song gets the arg-max.
Every metric function takes integer class indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# scikit-learn is imported where a metric is computed, not here: a saved network unpickles by
# importing genre_ray.training, which imports this module, and the tagging actors would pay about 2 s
# per process for metrics they never compute.

__all__ = ["classification_scores", "confusion_png", "majority_baseline", "per_class_report", "save_figure",
           "song_level"]


def song_level(clip_probs: np.ndarray, clip_song: np.ndarray, n_songs: int | None = None,
               method: str = "mean") -> np.ndarray:
    """Clip probabilities -> song probabilities.

    Args:
        clip_probs: ``(n_clips, n_classes)`` probabilities.
        clip_song: ``(n_clips,)`` song index of every clip, in ``[0, n_songs)``.
        n_songs: number of songs (defaults to ``clip_song.max() + 1``).
        method: ``mean`` (mean probability), ``vote`` (the share of the song's clips whose
            arg-max is each class; ties go to the higher mean probability) or ``max`` (each
            class's highest clip probability, renormalised).

    Returns:
        ``(n_songs, n_classes)`` rows that sum to 1.
    """
    n_songs = int(clip_song.max()) + 1 if n_songs is None else n_songs
    counts = np.maximum(np.bincount(clip_song, minlength=n_songs), 1)[:, None]

    def mean_of(values: np.ndarray) -> np.ndarray:
        sums = np.zeros((n_songs, clip_probs.shape[1]), dtype=np.float64)
        np.add.at(sums, clip_song, values)
        return sums / counts

    mean = mean_of(clip_probs)
    if method == "mean":
        return mean
    if method == "vote":
        votes = mean_of(np.eye(clip_probs.shape[1])[clip_probs.argmax(axis=1)])
        scores = votes + 1e-6 * mean  # the tie-break cannot outweigh one vote
        return scores / scores.sum(axis=1, keepdims=True)
    if method == "max":
        peak = np.zeros((n_songs, clip_probs.shape[1]), dtype=np.float64)
        np.maximum.at(peak, clip_song, clip_probs)
        return peak / np.maximum(peak.sum(axis=1, keepdims=True), 1e-12)
    raise ValueError(f"unknown song aggregation {method!r} (mean, vote or max; gru and lstm are learned)")


def classification_scores(y_true: np.ndarray, probs: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and cross-entropy against true class indices.

    Balanced accuracy and macro-F1 are not fooled by class imbalance; for a binary task ROC-AUC
    (of class 1) is added when both classes are present.

    The values are scikit-learn's (``accuracy_score``, ``balanced_accuracy_score``,
    ``f1_score(labels=range(n), average="macro", zero_division=0)``, ``log_loss`` and
    ``roc_auc_score``; tests/test_evaluate.py holds them equal), computed from one confusion
    matrix in numpy: every trial scores each epoch with this, and importing ``sklearn.metrics``
    costs each trial process about 2 s before its first epoch.
    """
    y = np.asarray(y_true).astype(np.int64)
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    probs = np.clip(probs.astype(np.float64), 1e-7, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows are off by ~1e-7
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp, true_n, pred_n = np.diag(cm).astype(np.float64), cm.sum(axis=1), cm.sum(axis=0)
    seen = true_n > 0  # balanced accuracy: the recall of each class that has true songs
    f1_den = true_n + pred_n  # 2 tp + fp + fn
    f1 = np.divide(2 * tp, f1_den, out=np.zeros(n_classes), where=f1_den > 0)
    out = {
        f"{prefix}acc": float((pred == y).mean()),
        f"{prefix}bacc": float((tp[seen] / true_n[seen]).mean()),
        f"{prefix}f1": float(f1.mean()),
        f"{prefix}loss": float(-np.log(probs[np.arange(len(y)), y]).mean()),
    }
    if n_classes == 2 and seen.all():
        out[f"{prefix}auc"] = _roc_auc(y, probs[:, 1])
    return out


def _roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC of class 1 as the Mann-Whitney statistic, tied scores sharing their mean rank."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict[str, float]:
    """Scores of always predicting the most common training class (the floor to beat)."""
    majority = int(np.bincount(y_train, minlength=n_classes).argmax())
    probs = np.full((len(y_test), n_classes), 1e-3)
    probs[:, majority] = 1.0
    return classification_scores(y_test, probs / probs.sum(axis=1, keepdims=True))


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (scikit-learn's report as a table)."""
    from sklearn.metrics import classification_report

    report = classification_report(y_true, y_pred, labels=list(range(len(classes))),
                                   target_names=list(classes), output_dict=True, zero_division=0)
    return pd.DataFrame(report).T


def confusion_png(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], path: str | Path,
                  title: str) -> Path:
    """Write a labelled confusion-matrix image and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    size = max(5.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(cm, display_labels=list(classes)).plot(ax=ax, colorbar=False,
                                                                   xticks_rotation=45)
    ax.set_title(title)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write (folders created) and close a matplotlib figure; return its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
