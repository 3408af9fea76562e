"""Built-in datasets generated from a seed: no files, no downloads, same tensors every time."""

from __future__ import annotations

import math

import torch

from ..config import AddingData, SeedTaggingData, SineData
from .base import DataSpec, Split, Splits, register


def split_sizes(cfg) -> tuple[int, int, int]:
    return cfg.num_train, cfg.num_val, cfg.num_test


def as_splits(inputs: torch.Tensor, targets: torch.Tensor, sizes: tuple[int, ...], spec: DataSpec) -> Splits:
    """Cut one generated block into consecutive train/val/test parts."""
    a, b, _ = sizes
    return Splits(
        train=Split(inputs[:a], targets[:a]),
        val=Split(inputs[a : a + b], targets[a : a + b]),
        test=Split(inputs[a + b :], targets[a + b :]),
        spec=spec,
    )


@register("seed_tagging")
def build_seed_tagging(cfg: SeedTaggingData) -> Splits:
    """Class of step t = argmax of a fixed random projection of a decaying sum of x[t-memory+1..t].

    The label is a deterministic function of the recent past, so a recurrent model can learn
    it exactly, while a model that looks at x[t] alone cannot.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    sizes = split_sizes(cfg)
    projection = torch.randn(cfg.input_dim, cfg.num_classes, generator=generator)
    inputs = torch.randn(sum(sizes), cfg.seq_len, cfg.input_dim, generator=generator)
    context = torch.zeros_like(inputs)
    for lag in range(cfg.memory):  # context[t] = Σ_k 0.5^k · x[t-k]
        context[:, lag:] += 0.5**lag * inputs[:, : cfg.seq_len - lag]
    targets = (context @ projection).argmax(dim=-1)  # (sequences, time)
    spec = DataSpec(task="tagging", input_size=cfg.input_dim, output_size=cfg.num_classes)
    return as_splits(inputs, targets, sizes, spec)


@register("sine")
def build_sine(cfg: SineData) -> Splits:
    """Windows of Σ_k a_k·sin(2πt/P_k + φ_k) + noise, random a_k and φ_k per window."""
    generator = torch.Generator().manual_seed(cfg.seed)
    sizes = split_sizes(cfg)
    count, length = sum(sizes), cfg.lookback + cfg.horizon
    periods = torch.tensor(cfg.periods)
    phases = torch.rand(count, 1, len(periods), generator=generator) * 2 * math.pi
    amplitudes = 0.5 + torch.rand(count, 1, len(periods), generator=generator)
    steps = torch.arange(length, dtype=torch.float32).view(1, length, 1)
    clean = (amplitudes * torch.sin(2 * math.pi * steps / periods + phases)).sum(-1)
    clean = clean / math.sqrt(len(periods))
    values = clean + cfg.noise * torch.randn(count, length, generator=generator)  # (windows, time)
    inputs = values[:, : cfg.lookback, None]  # (windows, lookback, 1)
    targets = values[:, cfg.lookback :, None]  # (windows, horizon, 1)
    spec = DataSpec(task="regression", input_size=1, output_size=1, horizon=cfg.horizon, target_columns=[0])
    return as_splits(inputs, targets, sizes, spec)


@register("adding")
def build_adding(cfg: AddingData) -> Splits:
    """Feature 0 is U(0,1) noise, feature 1 marks one step in each half; the target is the
    sum of the two marked values. Always predicting 1.0 gives MSE = Var(U+U) = 1/6 ≈ 0.167."""
    generator = torch.Generator().manual_seed(cfg.seed)
    sizes = split_sizes(cfg)
    count, half = sum(sizes), cfg.seq_len // 2
    values = torch.rand(count, cfg.seq_len, generator=generator)
    first = torch.randint(0, half, (count,), generator=generator)
    second = torch.randint(half, cfg.seq_len, (count,), generator=generator)
    markers = torch.zeros(count, cfg.seq_len)
    rows = torch.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    inputs = torch.stack([values, markers], dim=-1)  # (sequences, time, 2)
    targets = (values[rows, first] + values[rows, second]).view(count, 1, 1)
    spec = DataSpec(task="regression", input_size=2, output_size=1, horizon=1)
    return as_splits(inputs, targets, sizes, spec)
