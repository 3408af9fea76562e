"""Loss functions and metrics by task, and `evaluate` of a model on one split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .baselines import ClassPrior, build_baselines, data_season, fit_baselines
from .config import RunConfig, validate_config
from .data import DataSpec, Split, Task, build_splits, load_new_data
from .device import resolve_device
from .metrics import reference_baseline
from .models import build_model
from .checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint

IGNORE_INDEX = -100  # targets at padded steps


def build_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean data loss: cross-entropy over classes (per step for tagging/lm) or MSE."""
    if task in ("tagging", "lm"):
        return lambda logits, targets: F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
        )
    if task == "classification":
        return F.cross_entropy
    return F.mse_loss


def batch_sums(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Additive statistics of one batch, kept on the device until the split is done."""
    if task == "regression":
        error = outputs - targets
        return {
            "squared": error.square().sum(),
            "absolute": error.abs().sum(),
            "count": torch.tensor(error.numel(), device=error.device),
        }
    logits, labels = (outputs.flatten(0, 1), targets.flatten()) if task in ("tagging", "lm") else (outputs, targets)
    valid = labels != IGNORE_INDEX
    sums = {
        "nll": F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum"),
        "correct": ((logits.argmax(-1) == labels) & valid).sum(),
        "count": valid.sum(),
    }
    if task == "classification":  # confusion[true, predicted], additive over batches, for macro-F1
        classes = logits.shape[-1]
        sums["confusion"] = torch.bincount(labels * classes + logits.argmax(-1), minlength=classes * classes).view(
            classes, classes
        )
    return sums


def finish_metrics(task: Task, sums: dict[str, float]) -> dict[str, float]:
    """Turn summed statistics into the task's metrics."""
    count = max(sums["count"], 1)
    if task == "regression":
        mse = sums["squared"] / count
        metrics = {"loss": mse, "mse": mse, "mae": sums["absolute"] / count, "rmse": math.sqrt(mse)}
        if "squared_orig" in sums:  # the same errors in the file's units
            mse_orig = sums["squared_orig"] / count
            metrics |= {
                "mse_orig": mse_orig,
                "mae_orig": sums["absolute_orig"] / count,
                "rmse_orig": math.sqrt(mse_orig),
            }
        return metrics
    loss = sums["nll"] / count
    if task == "lm":
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bpc": loss / math.log(2)}
    metrics = {"loss": loss, "accuracy": sums["correct"] / count}
    if "confusion" in sums:
        metrics["macro_f1"] = macro_f1(sums["confusion"])
    return metrics


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean over classes of 2·TP / (2·TP + FP + FN), over the classes that occur in the labels or
    the predictions (scikit-learn's `f1_score(average="macro")`)."""
    confusion = confusion.double()
    true_pos = confusion.diag()
    support = confusion.sum(1) + confusion.sum(0)  # 2·TP + FN + FP
    present = support > 0
    return (2 * true_pos[present] / support[present]).mean().item() if present.any() else 0.0


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, task: Task, batch_size: int) -> dict[str, float]:
    """Metrics of `model` on a whole split (dropout off); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    hidden = None
    # Scaled regression data: errors times the scaler's scale are errors in the file's units.
    scale = split.unscale[1].to(split.targets.device) if task == "regression" and split.unscale else None
    for batch in split.batches(batch_size):
        outputs, new_hidden = model(batch.inputs, batch.lengths, hidden)
        hidden = new_hidden if split.stateful else None
        sums = batch_sums(task, outputs, batch.targets)
        if scale is not None:
            error = (outputs - batch.targets) * scale
            sums |= {"squared_orig": error.square().sum(), "absolute_orig": error.abs().sum()}
        for key, value in sums.items():
            totals[key] = totals[key] + value if key in totals else value
    model.train(was_training)
    return finish_metrics(
        task, {key: value.item() if value.dim() == 0 else value.cpu() for key, value in totals.items()}
    )


@torch.inference_mode()
def evaluate_prior(prior: ClassPrior, split: Split, task: Task, batch_size: int) -> dict[str, float]:
    """Metrics of predicting the same class distribution everywhere, from the targets alone."""
    log_prior = prior.log_prior.to(split.targets.device)
    majority = log_prior.argmax()
    classes = log_prior.shape[0]
    totals: dict[str, torch.Tensor] = {}
    for batch in split.batches(batch_size):
        labels = batch.targets.flatten()
        labels = labels[labels != IGNORE_INDEX]
        sums = {
            "nll": -log_prior[labels].sum(),
            "correct": (labels == majority).sum(),
            "count": labels.new_tensor(labels.numel()),
        }
        if task == "classification":
            sums["confusion"] = torch.bincount(labels * classes + majority, minlength=classes * classes).view(
                classes, classes
            )
        for key, value in sums.items():
            totals[key] = totals[key] + value if key in totals else value
    return finish_metrics(
        task, {key: value.item() if value.dim() == 0 else value.cpu() for key, value in totals.items()}
    )


def evaluate_baselines(
    models: dict[str, torch.nn.Module], splits: dict[str, Split], task: Task, batch_size: int
) -> dict[str, dict[str, float]]:
    """Each naive baseline's metrics on each named split, prefixed like the model's (`test_mse`)."""
    return {
        name: {
            key: value
            for split_name, split in splits.items()
            for key, value in prefixed(
                split_name,
                evaluate_prior(model, split, task, batch_size)
                if isinstance(model, ClassPrior)
                else evaluate(model, split, task, batch_size),
            ).items()
        }
        for name, model in models.items()
    }


def prefixed(split_name: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{split_name}_{key}": value for key, value in metrics.items()}


def load_trained(path: Path, target: torch.device) -> tuple[Path, dict, RunConfig, DataSpec, torch.nn.Module]:
    """(checkpoint file, payload, config, data spec, model with its weights on `target`)."""
    checkpoint_path = resolve_checkpoint(path)
    payload = load_checkpoint(checkpoint_path)
    try:
        raw_config, spec = payload["config"], DataSpec.from_dict(payload["data_spec"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(
            f"{checkpoint_path}: the checkpoint lacks a usable config or data spec ({type(err).__name__}: {err})"
        ) from None
    cfg = validate_config(raw_config, source=f"{checkpoint_path} (config)")
    model = build_model(cfg.model, spec)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{checkpoint_path}: weights do not fit the model in its config: {str(err).splitlines()[0]}"
        ) from None
    return checkpoint_path, payload, cfg, spec, model.to(target)


def evaluate_checkpoint(
    path: Path, split_name: str = "test", device: str = "auto", batch_size: int | None = None, data: Path | None = None
) -> dict:
    """Rebuild data and model from a checkpoint and evaluate one split, or the file `data` read
    through the saved pipeline (metrics prefixed `data_`); returns the result record."""
    target = resolve_device(device)
    checkpoint_path, payload, cfg, spec, model = load_trained(path, target)
    fit = payload.get("baseline_fit") if isinstance(payload.get("baseline_fit"), dict) else None
    if data is not None:
        split_name, split = "data", load_new_data(cfg.data, spec, data).to(target)
    else:
        splits = build_splits(cfg.data)
        split = splits.get(split_name).to(target)
        fit = fit if fit is not None else fit_baselines(spec, splits.train)  # a checkpoint from before baselines
    batch_size = batch_size or cfg.train.eval_batch_size
    metrics = evaluate(model, split, spec.task, batch_size)
    record = {"checkpoint": str(checkpoint_path), "split": split_name, "epoch": payload.get("epoch")}
    record |= ({"data": str(data)} if data is not None else {}) | prefixed(split_name, metrics)
    models = build_baselines(spec, fit or {}, data_season(cfg.data))
    baselines = evaluate_baselines(models, {split_name: split}, spec.task, batch_size)
    return record | {"baseline": reference_baseline(baselines, split_name), "baselines": baselines}
