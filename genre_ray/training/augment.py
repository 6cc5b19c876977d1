"""Training-time augmentation of feature batches: gain, time shift, SpecAugment and mixup.

Every augmentation is a searchable ``train.*`` value and 0 turns it off. They apply where they
mean something for the input:

- ``gain_db``: a random gain in [-g, g] dB per example; added to dB features (``logmel``,
  ``stft``), multiplied into raw ``waveform`` amplitudes. Other features have no loudness axis
  that a gain maps onto, so they are left alone.
- ``time_shift``: a random circular shift of up to this fraction of the clip along time, for
  every frame- or sample-based input (not for vectors).
- ``freq_mask`` / ``time_mask``: SpecAugment (torchaudio's ``mask_along_axis_iid``): one mask
  per example of up to this fraction of the bins / frames, on standardised spectrogram inputs,
  where 0 is the training mean.
- ``mixup``: mixup with Beta(alpha, alpha) weights on any input; the targets become the same
  mixture of one-hot labels.

Gain and shift work on raw features (before standardisation); masks and mixup on the
standardised batch. Nothing here runs at evaluation time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torchaudio.functional as AF

from genre_ray.models import FAMILY

__all__ = ["Augment"]

_DB_KINDS = ("logmel", "stft")
_KEYS = ("freq_mask", "time_mask", "mixup", "gain_db", "time_shift")


@dataclass(frozen=True)
class Augment:
    """The augmentation of one trial, for one feature kind."""

    kind: str
    freq_mask: float = 0.0
    time_mask: float = 0.0
    mixup: float = 0.0
    gain_db: float = 0.0
    time_shift: float = 0.0

    @classmethod
    def from_train(cls, train: dict[str, Any], kind: str) -> Augment:
        """Build from a trial's train settings (missing keys: off)."""
        return cls(kind, **{k: float(train.get(k, 0.0) or 0.0) for k in _KEYS})

    @property
    def family(self) -> str:
        return FAMILY[self.kind]

    @property
    def timed(self) -> bool:
        """The last axis is time (frames or samples)."""
        return self.family in ("spectrogram", "stacked", "waveform")

    def raw(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Gain and time shift on a raw (not yet standardised) batch."""
        n = x.shape[0]
        extra = (1,) * (x.ndim - 1)
        if self.gain_db > 0 and (self.kind in _DB_KINDS or self.family == "waveform"):
            gain = (torch.rand(n, generator=gen) * 2 - 1).mul_(self.gain_db).to(x.device).view(n, *extra)
            x = x * torch.pow(10.0, gain / 20.0) if self.family == "waveform" else x + gain
        if self.time_shift > 0 and self.timed:
            length = x.shape[-1]
            most = int(self.time_shift * length)
            if most > 0:
                shift = torch.randint(-most, most + 1, (n,), generator=gen).to(x.device)
                idx = (torch.arange(length, device=x.device)[None, :] - shift[:, None]) % length
                x = torch.gather(x, -1, idx.view(n, *(1,) * (x.ndim - 2), length).expand_as(x))
        return x

    def standardized(self, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """SpecAugment and mixup on a standardised batch.

        Returns:
            The batch and its targets: class indices, or ``(n, n_classes)`` probabilities with mixup.
        """
        if self.family in ("spectrogram", "stacked") and x.ndim == 3:
            if self.freq_mask > 0:
                x = AF.mask_along_axis_iid(x, int(self.freq_mask * x.shape[1]), 0.0, axis=1)
            if self.time_mask > 0:
                x = AF.mask_along_axis_iid(x, int(self.time_mask * x.shape[2]), 0.0, axis=2)
        if self.mixup > 0:
            n = x.shape[0]
            lam = torch.distributions.Beta(self.mixup, self.mixup).sample((n,)).to(x.device)
            perm = torch.randperm(n, generator=gen).to(x.device)
            shape = (n, *(1,) * (x.ndim - 1))
            x = lam.view(shape) * x + (1 - lam.view(shape)) * x[perm]
            onehot = torch.nn.functional.one_hot(y, n_classes).float()
            return x, lam[:, None] * onehot + (1 - lam[:, None]) * onehot[perm]
        return x, y
