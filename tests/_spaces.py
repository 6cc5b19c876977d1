"""A tiny search space over the generated demo collection, for the tests that run whole searches."""

from __future__ import annotations

from typing import Any


def tiny_space(name: str, task: str, demo_path: str, *, epochs: int, num_samples: int,
               batch_size: Any = None, max_concurrent: int = 2) -> dict[str, Any]:
    """cnn2d on 1 s log-mel clips of 3 genres x 6 songs of 4 s.

    ASHA's grace period equals ``epochs``: no early stops, so every trial runs all its epochs (long
    enough to be caught running, and the tests can count them).
    """
    return {
        "name": name, "task": task,
        "data": {"source": "demo", "path": demo_path, "demo": {"genres": 3, "songs_per_genre": 6, "seconds": 4.0}},
        "features": {"clip_seconds": 1.0, "clip_overlap": 0.0, "n_mels": 32, "batch_files": 4},
        "model": {"name": "cnn2d", "params": {"depth": {"int": [1, 2]}, "width": {"choice": [4, 8]},
                                              "dropout": 0.1, "batch_norm": True}},
        "train": {"lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": batch_size or {"choice": [16, 32]},
                  "epochs": epochs},
        "search": {"num_samples": num_samples, "max_concurrent": max_concurrent, "grace_period": epochs,
                   "reduction_factor": 2, "max_epochs": epochs},
        "split": {"folds": None},  # one validation split: the trials' epochs are what these tests count
    }
