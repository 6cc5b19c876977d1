"""The learned clip -> song aggregator: a GRU or LSTM over the sequence of a song's clip embeddings.

The clip network's ``embed`` output for every clip of a song, in time order, is read by a
one-layer recurrent network whose last hidden state gives the song's class. It is trained after
each epoch of the clip network on the training songs (the clip network frozen for that step)
and judged on the validation songs, so the objective is song-level quality whichever
aggregation a trial uses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

__all__ = ["SequenceAggregator", "songs_of"]


class SequenceAggregator(nn.Module):
    """A GRU or LSTM over clip embeddings -> song logits.

    Args:
        kind: ``gru`` or ``lstm``.
        embed_dim: size of one clip embedding.
        n_classes: number of genres.
        hidden: recurrent units.
    """

    def __init__(self, kind: str, embed_dim: int, n_classes: int, hidden: int = 64) -> None:
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.norm = nn.LayerNorm(embed_dim)
        self.rnn = rnn(embed_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, songs: list[torch.Tensor]) -> torch.Tensor:
        """``songs``: one ``(clips, embed_dim)`` tensor per song -> ``(n_songs, n_classes)`` logits."""
        packed = pack_sequence([self.norm(s) for s in songs], enforce_sorted=False)
        _, state = self.rnn(packed)
        last = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
        return self.head(last[-1])


def songs_of(embeddings: torch.Tensor, clip_song: np.ndarray, n_songs: int) -> list[torch.Tensor]:
    """Split clip embeddings into one tensor per song, clips in their original (time) order."""
    order = np.argsort(clip_song, kind="stable")
    bounds = np.searchsorted(clip_song[order], np.arange(n_songs + 1))
    idx = torch.as_tensor(order, device=embeddings.device)
    return [embeddings[idx[bounds[i]:bounds[i + 1]]] for i in range(n_songs)]
