"""Loss functions and metrics by task, and `evaluate` of a model on one split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .config import validate_config
from .data import DataSpec, Split, Task, build_splits
from .device import resolve_device
from .models import build_model
from .runs import CheckpointError, load_checkpoint, resolve_checkpoint

IGNORE_INDEX = -100  # targets at padded steps

# Metric names per task, without the split prefix (`val_loss`, `test_accuracy`, ...).
METRICS: dict[str, tuple[str, ...]] = {
    "tagging": ("loss", "accuracy"),
    "classification": ("loss", "accuracy"),
    "regression": ("loss", "mse", "mae", "rmse"),
    "lm": ("loss", "perplexity", "bpc"),
}
HIGHER_IS_BETTER = {"accuracy", "macro_f1"}


def build_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean data loss: cross-entropy over classes (per step for tagging/lm) or MSE."""
    if task in ("tagging", "lm"):
        return lambda logits, targets: F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    if task == "classification":
        return F.cross_entropy
    return F.mse_loss


def batch_sums(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Additive statistics of one batch, kept on the device until the split is done."""
    if task == "regression":
        error = outputs - targets
        return {"squared": error.square().sum(), "absolute": error.abs().sum(), "count": torch.tensor(error.numel(), device=error.device)}
    logits, labels = (outputs.flatten(0, 1), targets.flatten()) if task in ("tagging", "lm") else (outputs, targets)
    valid = labels != IGNORE_INDEX
    return {
        "nll": F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum"),
        "correct": ((logits.argmax(-1) == labels) & valid).sum(),
        "count": valid.sum(),
    }


def finish_metrics(task: Task, sums: dict[str, float]) -> dict[str, float]:
    """Turn summed statistics into the task's metrics."""
    count = max(sums["count"], 1)
    if task == "regression":
        mse = sums["squared"] / count
        return {"loss": mse, "mse": mse, "mae": sums["absolute"] / count, "rmse": math.sqrt(mse)}
    loss = sums["nll"] / count
    if task == "lm":
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bpc": loss / math.log(2)}
    return {"loss": loss, "accuracy": sums["correct"] / count}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, task: Task, batch_size: int) -> dict[str, float]:
    """Metrics of `model` on a whole split (dropout off); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    hidden = None
    for batch in split.batches(batch_size):
        outputs, new_hidden = model(batch.inputs, batch.lengths, hidden)
        hidden = new_hidden if split.stateful else None
        for key, value in batch_sums(task, outputs, batch.targets).items():
            totals[key] = totals[key] + value if key in totals else value
    model.train(was_training)
    return finish_metrics(task, {key: value.item() for key, value in totals.items()})


def prefixed(split_name: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{split_name}_{key}": value for key, value in metrics.items()}


def evaluate_checkpoint(path: Path, split_name: str = "test", device: str = "auto", batch_size: int | None = None) -> dict:
    """Rebuild data and model from a checkpoint and evaluate one split; returns the result record."""
    checkpoint_path = resolve_checkpoint(path)
    payload = load_checkpoint(checkpoint_path)
    cfg = validate_config(payload["config"], source=f"{checkpoint_path} (config)")
    spec = DataSpec.from_dict(payload["data_spec"])
    target = resolve_device(device)
    split = build_splits(cfg.data).get(split_name).to(target)
    model = build_model(cfg.model, spec)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{checkpoint_path}: weights do not fit the model in its config: {str(err).splitlines()[0]}") from None
    model.to(target)
    metrics = evaluate(model, split, spec.task, batch_size or cfg.train.eval_batch_size)
    return {"checkpoint": str(checkpoint_path), "split": split_name, "epoch": payload.get("epoch"), **prefixed(split_name, metrics)}
