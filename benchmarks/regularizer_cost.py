"""What each regularizer costs per training step against the plain fused LSTM, on a PTB-small
shaped model (2×200 LSTM, 200-d embedding, 10k vocabulary, bptt 35, batch 20) over a synthetic
token stream, through the real loop (`train_one_epoch`). Target (issue 12): weight-drop ≤ 1.10×.

    python benchmarks/regularizer_cost.py [--steps 5] [--rounds 12] [--threads 1] [--vocab 10000] [--only NAME ...]

Each variant is built once; then round after round each runs a few steps in turn, so a load change
on a shared machine hits them all alike; the ratio is the median over rounds of (variant seconds /
plain seconds) in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rnnl2.config import apply_overrides, validate_config
from rnnl2.optim import build_optimizer
from rnnl2.regularization import L2Penalty
from rnnl2.train import Observer, train_one_epoch
from rnnl2.setup import build_setup

VARIANTS = {
    "plain": [],
    "weight_drop 0.5": ["model.weight_drop=0.5"],
    "locked dropout 0.3": ["model.locked_dropout=true", "model.dropout=0.3", "model.input_dropout=0.3"],
    "unlocked dropout 0.3": ["model.dropout=0.3", "model.input_dropout=0.3"],
    "embedding_dropout 0.1": ["model.embedding_dropout=0.1"],
    "AR 2 + TAR 1": ["regularization.ar=2", "regularization.tar=1"],
    "L1 1e-6": ["l1.lambda=1e-6"],
    "max_norm 3": ["regularization.max_norm={value: 3}"],
    "all together": [
        "model.weight_drop=0.5",
        "model.locked_dropout=true",
        "model.dropout=0.3",
        "model.input_dropout=0.3",
        "model.embedding_dropout=0.1",
        "regularization.ar=2",
        "regularization.tar=1",
        "l1.lambda=1e-6",
    ],
}


def write_stream(folder: Path, vocab: int, tokens: int) -> Path:
    """A Zipf-distributed word stream, PTB-like in vocabulary size, seeded."""
    generator = torch.Generator().manual_seed(0)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    ids = torch.multinomial(1.0 / ranks, tokens, replacement=True, generator=generator)
    words = [f"w{i}" for i in ids.tolist()]
    path = folder / "stream.txt"
    lines = [" ".join(words[i : i + 20]) for i in range(0, tokens, 20)]
    lines.append(" ".join(f"w{i}" for i in range(vocab)))  # every word once: the full vocabulary
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(path: Path) -> dict:
    return {
        "name": "cost",
        "device": "cpu",
        "data": {"kind": "text_lm", "path": str(path), "level": "word", "bptt": 35, "ratios": [0.9, 0.05, 0.05]},
        "model": {"cell": "lstm", "hidden_size": 200, "num_layers": 2, "embedding_dim": 200, "init_scale": 0.1},
        "l2": {"lambda": 1e-5},
        "optimizer": {"name": "sgd", "lr": 35.0},
        "train": {"batch_size": 20, "clip_grad_norm": 0.142857142857},
    }


def build_trainer(raw: dict, overrides: list[str]):
    """A function that runs `steps` optimizer steps of the real loop for this variant (warmed up)."""
    cfg = validate_config(apply_overrides(raw, overrides))
    s = build_setup(cfg)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    penalty = L2Penalty(s.groups)
    generator = torch.Generator().manual_seed(0)

    def train(steps: int) -> float:
        started = time.perf_counter()
        train_one_epoch(s, optimizer, penalty, generator, Observer(), steps)
        return time.perf_counter() - started

    train(1)
    return train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--only", nargs="*", default=None, help="variants to time besides plain")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["plain", *(args.only or [v for v in VARIANTS if v != "plain"])]
    with tempfile.TemporaryDirectory() as folder:
        raw = base_config(write_stream(Path(folder), args.vocab, tokens=(args.steps + 2) * 20 * 35))
        trainers = {name: build_trainer(raw, VARIANTS[name]) for name in names}
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):  # short interleaved chunks: a load change hits every variant alike
            for name in names:
                seconds[name].append(trainers[name](args.steps))
    print(
        f"{args.steps} steps of batch 20 × bptt 35, vocabulary {args.vocab}, {args.threads} thread(s), {args.rounds} rounds"
    )
    print("| variant | ms per step (median) | × plain (median of per-round ratios) |")
    print("|---|---:|---:|")
    for name in names:
        ratios = [t / p for t, p in zip(seconds[name], seconds["plain"])]
        per_step = 1000 * statistics.median(seconds[name]) / args.steps
        print(f"| {name} | {per_step:.1f} | {statistics.median(ratios):.3f} |")


if __name__ == "__main__":
    main()
