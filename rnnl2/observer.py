"""What a training run tells its caller as it goes: progress callbacks, silent by default. In a
module of its own, without torch, so the CLI's printing observer can subclass it at start-up."""

from __future__ import annotations

from typing import Any


class Observer:
    """Progress callbacks; the CLI supplies one that prints, the default stays silent."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_epoch_start(self, epoch: int, steps: int) -> None: ...
    def on_step(self, step: int, loss: float | None) -> None: ...
    def on_epoch_end(self, row: dict[str, Any]) -> None: ...
