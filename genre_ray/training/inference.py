"""Inference on clips and songs: what a trial reports on its validation songs and what serving uses.

The serving side (:mod:`genre_ray.serving.classifier`) imports this module, never the trainable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from genre_ray.evaluate import classification_scores, song_level
from genre_ray.training.aggregate import songs_of
from genre_ray.training.device import inference_autocast
from genre_ray.training.wrappers import ClassicalModel, Ensemble, Standardized, TrialData


@torch.inference_mode()
def predict_probs(model: nn.Module | ClassicalModel, x: np.ndarray, device: torch.device,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities of every clip, in batches."""
    if isinstance(model, ClassicalModel):
        return model.predict_proba(x)
    model.eval()
    amp = inference_autocast(device)
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)
        with amp:
            logits = model(xb)
        probs = logits.float()
        if not getattr(model, "probabilities", False):
            probs = torch.softmax(probs, dim=-1)
        out.append(probs.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.inference_mode()
def clip_embeddings(model: Standardized, x: np.ndarray | torch.Tensor, device: torch.device,
                batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = [model.embed(torch.as_tensor(x[i:i + batch_size]).to(device, non_blocking=True)).float()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def song_probabilities(model: nn.Module | ClassicalModel, x: np.ndarray, clip_song: np.ndarray, n_songs: int,
                       device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """``(clip probabilities, song probabilities)`` with the model's own clip -> song aggregation."""
    clip = predict_probs(model, x, device)
    members: list[Any] = list(model.members) if isinstance(model, Ensemble) else [model]
    songs = []
    for m in members:
        if getattr(m, "aggregator", None) is not None:
            with torch.inference_mode():
                logits = m.aggregator(songs_of(clip_embeddings(m, x, device), clip_song, n_songs))
            songs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        else:
            probs = clip if len(members) == 1 else predict_probs(m, x, device)
            songs.append(song_level(probs, clip_song, n_songs, getattr(m, "aggregation", "mean")))
    return clip, np.mean(songs, axis=0)


def validation_metrics(model: nn.Module | ClassicalModel, data: TrialData,
                       device: torch.device) -> dict[str, float]:
    """Clip- and song-level accuracy, macro-F1 and loss on the validation songs."""
    probs, song_probs = song_probabilities(model, data.x_val, data.val_song, len(data.y_val_song), device)
    clip = classification_scores(data.y_val, probs, prefix="val_clip_")
    song = classification_scores(data.y_val_song, song_probs, prefix="val_song_")
    return {**clip, **song, "val_loss": clip["val_clip_loss"]}

