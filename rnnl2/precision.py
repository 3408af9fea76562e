"""Mixed precision (`train.precision`): autocast of the forward pass and the data loss, fp16's
gradient scaler, and which device and cell torch can run in which precision. Parameters,
gradients, the L2 term and every logged number stay in fp32.

    forward + loss ── autocast(bf16|fp16) ──► loss (fp32: cross-entropy and MSE autocast up)
    backward(scale · loss) ──► scaled grads ──► unscale_ ──► grads + λ·θ ──► clip ──► step
                                                  (fp16 only)   (exact, fp32)         (skipped on inf)
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch

from .errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


class Precision:
    """How one run computes its forward pass: fp32 (a no-op everywhere), or autocast to bf16/fp16;
    fp16 also scales the loss with `torch.amp.GradScaler` so small gradients do not underflow."""

    def __init__(self, name: str = "fp32", device_type: str = "cpu", scaler: torch.amp.GradScaler | None = None):
        self.name, self.device_type = name, device_type
        self.dtype = DTYPES.get(name)
        self.scaler = scaler if scaler is not None else (torch.amp.GradScaler(device_type) if name == "fp16" else None)

    def autocast(self) -> ContextManager[Any]:
        """Around the forward pass and the loss; nothing in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the loss scale, in place, before λ·θ is added and before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def kept(self, grad_norm: torch.Tensor) -> torch.Tensor | None:
        """With a scaler: a 0-dim bool tensor, whether this step's (unscaled) gradients are finite, i.e.
        whether the scaler will take the step (no device sync); None without a scaler."""
        return None if self.scaler is None else torch.isfinite(grad_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(), or the scaler's: skipped when a gradient is inf/NaN, the scale then halves."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's scale and growth tracker (plain numbers), for last.pt; None without one."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def build_precision(name: str, device: torch.device, cell: str) -> Precision:
    """The run's `Precision`, after checking that torch can autocast `cell` on `device` in it."""
    if name != "fp32":
        check_precision(name, device, cell)
    return Precision(name, device.type)


def check_precision(name: str, device: torch.device, cell: str) -> None:
    """A ConfigError (exit 2) when torch cannot run `cell` on `device` under autocast to `name`:
    found by a forward and backward pass of a tiny cell, the only reliable test (torch 2.13's CPU
    autocast runs RNN and LSTM in bf16 but has no fp16 LSTM kernel; GRU stays in fp32)."""
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"train.precision: {name} needs autocast, which torch has not for {device.type}")
    if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: bf16 is not supported by this GPU; use fp16 or fp32")
    try:
        module = CELLS[cell](3, 4, batch_first=True).to(device)
        with torch.autocast(device.type, dtype=DTYPES[name]):
            outputs, _ = module(torch.randn(2, 3, 3, device=device))
        outputs.float().sum().backward()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:160]
        raise ConfigError(
            f"train.precision: {name} {cell.upper()} does not run on {device.type} with torch {torch.__version__} "
            f"({first}); use train.precision=fp32{' or bf16' if name == 'fp16' else ''}"
        ) from None


def check_scaler_state(state: Any) -> bool:
    """Whether a checkpoint's `scaler` entry is a GradScaler state dict: numbers by name."""
    return isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in state.items()
    )
