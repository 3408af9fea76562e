"""Turn the allocator's errors into one line a user can act on: how many parameters the model
has and how much memory they need, instead of a traceback from deep inside torch."""

from __future__ import annotations

from typing import Any

import torch

from .errors import RunFailed

# Optimizer state per parameter, in copies of the weights (Adam keeps two moments).
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2, "rmsprop": 1, "adagrad": 1}
ALLOCATOR_MESSAGES = ("can't allocate memory", "out of memory", "not enough memory", "bad_alloc")


class OutOfMemory(RunFailed):
    """The model, its gradients or its optimizer state did not fit in memory: exit code 1."""


def is_allocation_error(error: BaseException) -> bool:
    """MemoryError, CUDA's OutOfMemoryError, or a RuntimeError the CPU allocator raised."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in ALLOCATOR_MESSAGES)


def count_planned_parameters(build: Any) -> int | None:
    """Parameters of the model `build()` makes, counted on the meta device (nothing allocated)."""
    try:
        with torch.device("meta"):
            return sum(p.numel() for p in build().parameters())
    except Exception:  # the count is a courtesy: the message goes out without it
        return None


def out_of_memory(error: BaseException, parameters: int | None, optimizer: str, device: str) -> OutOfMemory:
    """`out of memory: 68,719,476,736 parameters need 275 GB as float32 weights (1,100 GB with
    gradients and adam's state) on cpu; lower model.hidden_size, model.num_layers or ...`."""
    what = "the model"
    if parameters:
        weights = parameters * 4 / 1e9
        total = weights * (2 + OPTIMIZER_SLOTS.get(optimizer, 2))
        what = (
            f"{parameters:,} parameters need {gigabytes(weights)} GB as float32 weights "
            f"({gigabytes(total)} GB with gradients and {optimizer}'s state)"
        )
    return OutOfMemory(
        f"out of memory: {what} on {device}; lower model.hidden_size, model.num_layers, "
        f"model.embedding_dim or train.batch_size ({type(error).__name__})"
    )


def gigabytes(value: float) -> str:
    """`0.0421`, `4.21`, `8,734`: three figures below 100, whole numbers above."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
