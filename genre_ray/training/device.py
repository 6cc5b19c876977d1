"""Where and how a trial computes: the device, torch's thread pools, mixed precision (AMP)."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


def select_device(gpu: float) -> torch.device:
    """CUDA when the trial asked for a GPU share and one is visible, else CPU (with a warning).

    Ray gives a trial with ``resources.gpu`` > 0 its card through ``CUDA_VISIBLE_DEVICES``, so
    ``cuda`` is that card. A fractional share (0.25: four trials on a card) also caps this
    process's share of the card's memory: Ray schedules by share but does not enforce it.
    """
    if gpu > 0 and torch.cuda.is_available():
        if gpu < 1:
            torch.cuda.set_per_process_memory_fraction(float(gpu))
        log.info("training on CUDA (GPU share %g, CUDA_VISIBLE_DEVICES=%s)", gpu,
                 os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        return torch.device("cuda")
    if gpu > 0:
        log.warning("a GPU was requested but none is visible to this trial; training on CPU")
    return torch.device("cpu")


def threads_for(cpu: float) -> int:
    """Torch threads for a CPU share: its whole CPUs, at least one (0.5 -> 1, 2 -> 2, 2.5 -> 2)."""
    return max(1, int(cpu))


_INTEROP_THREADS: int | None = None  # set once per process; Tune reuses a trial's actor for the next


def set_threads(cpu: float) -> int:
    """Size torch's intra-op and inter-op thread pools to the trial's CPU share.

    The intra-op count can change at any time. The inter-op pool can be sized only once per
    process and only before it is first used; a reused actor keeps the first trial's size
    (every trial of a search has the same share), and a process that already used it keeps
    torch's default.

    Returns:
        The intra-op thread count.
    """
    global _INTEROP_THREADS
    n = threads_for(cpu)
    torch.set_num_threads(n)
    if _INTEROP_THREADS is None:
        try:
            torch.set_num_interop_threads(n)
            _INTEROP_THREADS = n
        except RuntimeError as exc:  # this process already started its inter-op pool
            _INTEROP_THREADS = -1
            log.debug("inter-op threads left as they are: %s", exc)
    return n


@dataclass(frozen=True)
class AmpPolicy:
    """Mixed precision of a device: the autocast dtype (None: full precision) and whether the
    loss needs a grad scaler (fp16 gradients underflow without one; bf16 has fp32's range)."""

    dtype: torch.dtype | None
    scaler: bool


def amp_policy(device_type: str, bf16_supported: bool) -> AmpPolicy:
    """bf16 on a CUDA card that has it natively, fp16 with a grad scaler on older cards, none on CPU."""
    if device_type != "cuda":
        return AmpPolicy(None, False)
    if bf16_supported:
        return AmpPolicy(torch.bfloat16, False)
    return AmpPolicy(torch.float16, True)


def _bf16_supported(device: torch.device) -> bool:
    # Emulated bf16 (pre-Ampere cards) is slower than fp16 with a scaler.
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


class Precision:
    """A model's mixed precision: the autocast context and, for fp16, its grad scaler.

    One per model for the whole trial, so the scaler's loss scale carries over from epoch to epoch
    (and through a checkpoint).

    Args:
        device: where the model trains.
        bf16: whether the card has native bf16 (None: ask it).
    """

    def __init__(self, device: torch.device, bf16: bool | None = None) -> None:
        self.device_type = device.type
        self.policy = amp_policy(device.type, _bf16_supported(device) if bf16 is None else bf16)
        self.scaler = torch.amp.GradScaler(device.type) if self.policy.scaler else None

    def autocast(self) -> AbstractContextManager[Any]:
        if self.policy.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.policy.dtype)

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step, through the scaler when there is one."""
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def inference_autocast(device: torch.device) -> AbstractContextManager[Any]:
    """The inference autocast of a device (no scaler: nothing is backpropagated)."""
    policy = amp_policy(device.type, _bf16_supported(device))
    return nullcontext() if policy.dtype is None else torch.autocast(device.type, dtype=policy.dtype)

