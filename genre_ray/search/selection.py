"""Choosing the final model from the trials' out-of-fold predictions: greedy ensembles, suspect labels.

Everything here works on song-level class probabilities that the trials' own models gave to songs
they did not train on: the validation songs, or with ``split.folds`` every non-test song once (its
fold's model). Nothing here sees the test split. numpy and pandas only.

- :func:`greedy_ensemble` is ensemble selection (Caruana, Niculescu-Mizil, Crew and Ksikes, "Ensemble
  selection from libraries of models", ICML 2004): start from the best model, add with replacement
  the model that most improves the ensemble's score, keep the best prefix. The weights are how often
  each model was picked.
- :func:`suspect_labels` lists the songs whose label the models confidently contradict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["EnsembleChoice", "greedy_ensemble", "mix", "score", "suspect_labels"]

_EPS = 1e-7


def score(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(song accuracy, mean log loss)`` of song probabilities ``(n, C)`` against labels ``(n,)``."""
    p = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
    return float((probs.argmax(1) == y).mean()), float(-np.log(p).mean())


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Higher accuracy wins; at equal accuracy (common on a few songs), the lower log loss."""
    return a[0] > b[0] + 1e-12 or (abs(a[0] - b[0]) <= 1e-12 and a[1] < b[1] - 1e-12)


@dataclass
class EnsembleChoice:
    """What :func:`greedy_ensemble` chose.

    Attributes:
        weights: candidate index -> weight (they sum to 1); one entry when no mix beat the best model.
        best: the index of the best single candidate.
        ensemble_score: ``(accuracy, log loss)`` of the weighted mix on the same songs.
        best_score: the best single candidate's ``(accuracy, log loss)``.
        history: the score after each round (a round adds one pick).
    """

    weights: dict[int, float]
    best: int
    ensemble_score: tuple[float, float]
    best_score: tuple[float, float]
    history: list[tuple[float, float]] = field(default_factory=list)

    @property
    def beats_best(self) -> bool:
        """Whether the mix has more than one member and scores better than the best single model."""
        return len(self.weights) > 1 and _better(self.ensemble_score, self.best_score)


def greedy_ensemble(candidates: list[np.ndarray], y: np.ndarray, rounds: int = 25) -> EnsembleChoice:
    """Greedy ensemble selection with replacement over candidates' song probabilities.

    Args:
        candidates: one ``(n_songs, n_classes)`` array per model, rows in the same song order.
        y: the songs' class indices.
        rounds: picks after the first (the mix of the best prefix of picks is kept).

    Raises:
        ValueError: with no candidate, or arrays whose shapes do not match ``y``.
    """
    if not candidates:
        raise ValueError("greedy_ensemble needs at least one candidate")
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in candidates])
    if stack.shape[1] != len(y):
        raise ValueError(f"candidates hold {stack.shape[1]} songs, labels {len(y)}")
    singles = [score(p, y) for p in stack]
    best = 0
    for i, s in enumerate(singles):
        if _better(s, singles[best]):
            best = i
    counts = np.zeros(len(stack), dtype=np.int64)
    counts[best] = 1
    total = stack[best].copy()
    history = [singles[best]]
    best_counts, best_mix = counts.copy(), singles[best]
    for _ in range(rounds):
        n = counts.sum() + 1
        scores = [score((total + p) / n, y) for p in stack]
        pick = 0
        for i, s in enumerate(scores):
            if _better(s, scores[pick]):
                pick = i
        counts[pick] += 1
        total += stack[pick]
        history.append(scores[pick])
        if _better(scores[pick], best_mix):
            best_counts, best_mix = counts.copy(), scores[pick]
    weights = {int(i): float(c / best_counts.sum()) for i, c in enumerate(best_counts) if c}
    return EnsembleChoice(weights, best, best_mix, singles[best], history)


def mix(candidates: list[np.ndarray], weights: dict[int, float]) -> np.ndarray:
    """The weighted mean of the candidates' probabilities."""
    parts = [w * np.asarray(candidates[i], dtype=np.float64) for i, w in weights.items()]
    return np.sum(parts, axis=0)


def suspect_labels(songs: pd.DataFrame, probs: np.ndarray, y: np.ndarray, classes: list[str],
                   votes: np.ndarray | None = None, min_probability: float = 0.5) -> pd.DataFrame:
    """The songs whose label the out-of-fold predictions confidently contradict, most confident first.

    Args:
        songs: one row per song, in the order of ``probs``: ``song_id`` and, when known, ``path``,
            ``artist`` and ``fold``.
        probs: out-of-fold song probabilities ``(n, C)`` (the final model's, or the best trial's).
        y: the songs' labels as class indices.
        classes: the class names.
        votes: ``(n_models, n)`` argmax classes of each candidate model's out-of-fold predictions;
            ``models_agreeing`` counts those that name the same genre as ``probs``.
        min_probability: a song is listed when its predicted genre is not its label and gets at
            least this probability.

    Returns:
        ``song_id``, ``label``, ``predicted``, ``probability``, ``label_probability``,
        ``models_agreeing``, ``models`` and the ``songs`` columns ``path``/``artist``/``fold`` present.
    """
    pred = probs.argmax(1)
    idx = np.arange(len(y))
    wrong = (pred != y) & (probs[idx, pred] >= min_probability)
    out = pd.DataFrame({
        "song_id": songs["song_id"].to_numpy()[wrong],
        "label": np.asarray(classes, dtype=object)[y[wrong]],
        "predicted": np.asarray(classes, dtype=object)[pred[wrong]],
        "probability": probs[idx, pred][wrong].round(4),
        "label_probability": probs[idx, y][wrong].round(4),
    })
    if votes is not None and len(votes):
        out["models_agreeing"] = (np.asarray(votes)[:, wrong] == pred[wrong]).sum(0)
        out["models"] = len(votes)
    for column in ("fold", "artist", "path"):
        if column in songs:
            out[column] = songs[column].to_numpy()[wrong]
    return out.sort_values(["probability", "song_id"], ascending=[False, True], ignore_index=True)
