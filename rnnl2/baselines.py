"""Naive baselines, built as tiny fixed "models" so `evaluate` scores them exactly like the
network (same splits, batches, scaling and `*_orig` units): forecasts repeat the last row (or the
row one season back) or the training mean; classes follow their training frequencies."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data import DataSpec, Split


class RepeatLast(nn.Module):
    """Every horizon step is the window's last observed value of the same column (persistence)."""

    def __init__(self, columns: list[int], horizon: int):
        super().__init__()
        self.columns, self.horizon = columns, horizon

    def forward(self, inputs, lengths=None, hidden=None):
        last = inputs[:, -1:, self.columns]  # (batch, 1, targets)
        return last.expand(-1, self.horizon, -1), None  # (batch, horizon, targets)


class SeasonalNaive(nn.Module):
    """Step h (1-based) repeats the value one season back: y[T+h] = y[T+h − m·⌈h/m⌉]."""

    def __init__(self, columns: list[int], horizon: int, season: int):
        super().__init__()
        self.columns, self.horizon, self.season = columns, horizon, season

    def forward(self, inputs, lengths=None, hidden=None):
        lookback = inputs.shape[1]
        steps = torch.arange(1, self.horizon + 1, device=inputs.device)
        rows = lookback - 1 + steps - self.season * ((steps - 1) // self.season + 1)  # positions in the window
        return inputs[:, rows][:, :, self.columns], None  # (batch, horizon, targets)


class TrainMean(nn.Module):
    """Every target is its mean over the training split (for targets that are not inputs)."""

    def __init__(self, mean: list[float], horizon: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.horizon = horizon

    def forward(self, inputs, lengths=None, hidden=None):
        return self.mean.to(inputs.device).expand(inputs.shape[0], self.horizon, -1), None


class ClassPrior(nn.Module):
    """The same class distribution for every prediction: the training class frequencies, add-one
    smoothed (`smoothing`) so a class never seen in training is not impossible. Its cross-entropy
    is the unigram one, its argmax the majority class. `evaluate.evaluate_prior` scores it from the
    targets alone (no (batch, time, classes) logits for a 10,000-word vocabulary)."""

    def __init__(self, counts: list[int], smoothing: float = 1.0):
        super().__init__()
        counts_tensor = torch.tensor(counts, dtype=torch.float64) + smoothing
        self.register_buffer("log_prior", (counts_tensor / counts_tensor.sum()).log())  # (classes,) float64


def fit_baselines(spec: DataSpec, train: Split) -> dict[str, Any]:
    """What the baselines learn from the training split, JSON-ready (one cheap pass over its
    targets): class counts, or the mean of each target when the targets are not inputs."""
    if spec.task != "regression":
        counts = torch.zeros(spec.output_size, dtype=torch.long)
        for batch in train.batches(4096):
            labels = batch.targets.flatten()
            labels = labels[labels >= 0]  # padded steps (-100) are not predictions
            counts += torch.bincount(labels.cpu(), minlength=spec.output_size)[: spec.output_size]
        return {"counts": counts.tolist()}
    if spec.target_columns is not None:
        return {}
    total = torch.zeros(spec.output_size, dtype=torch.float64)
    for batch in train.batches(4096):
        total += batch.targets.double().sum(dim=(0, 1)).cpu()
    return {"mean": (total / max(len(train) * spec.horizon, 1)).tolist()}


def build_baselines(spec: DataSpec, fit: dict[str, Any], season: int | None = None) -> dict[str, nn.Module]:
    """The task's naive baselines by name: forecasting repeat_last (+ seasonal_naive with a
    season), other regression train_mean, classification majority_class, tagging and lm unigram."""
    if spec.task == "regression":
        if spec.target_columns is None:
            return {"train_mean": TrainMean(fit["mean"], spec.horizon)} if "mean" in fit else {}
        models: dict[str, nn.Module] = {"repeat_last": RepeatLast(spec.target_columns, spec.horizon)}
        if season:
            models["seasonal_naive"] = SeasonalNaive(spec.target_columns, spec.horizon, season)
        return models
    if "counts" not in fit:
        return {}
    name = "majority_class" if spec.task == "classification" else "unigram"
    return {name: ClassPrior(fit["counts"])}


def data_season(data_cfg: Any) -> int | None:
    """`data.season` where the data kind has one."""
    return getattr(data_cfg, "season", None)
