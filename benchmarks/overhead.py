"""Training overhead of rnnl2 against a minimal hand-written PyTorch loop.

The seed model (configs/seed_lstm.yaml: 2×LSTM(128), dropout 0.5, per-step softmax, Adam,
L2 on rnn.weight_ih_l0) trains on identical tensors, alternately through `rnnl2.train.run`
and through `plain_epoch` below (same model shape, data, batch size and threads).

    flock /tmp/rnnl2-heavy.lock python benchmarks/overhead.py overhead --runs 5
    flock /tmp/rnnl2-heavy.lock python benchmarks/overhead.py penalty --runs 5
    flock /tmp/rnnl2-heavy.lock python benchmarks/overhead.py scaling
    flock /tmp/rnnl2-heavy.lock python benchmarks/overhead.py startup
    python benchmarks/overhead.py overhead --device cuda        # on a CUDA machine

An epoch is timed from the start of one epoch to the start of the next, so it includes what
each loop does between epochs: rnnl2 evaluates, logs metrics.jsonl/csv, writes both
checkpoints; the plain loop evaluates the validation split. The first epoch of every run is
warm-up and is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "configs" / "seed_lstm.yaml"


# --------------------------------------------------------------- the plain PyTorch loop


class PlainLSTM(nn.Module):
    """What a user writes by hand: LSTM(128) → Dropout → LSTM(128) → Dropout → Linear per step."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float, classes: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, inputs):
        steps, _ = self.lstm(inputs)
        return self.head(self.dropout(steps))


def plain_step(model, optimizer, inputs, targets, index, lam: float) -> None:
    """One hand-written training step: cross-entropy plus (λ/2)·‖weight_ih_l0‖², backward, step."""
    logits = model(inputs[index])
    loss = F.cross_entropy(logits.flatten(0, 1), targets[index].flatten())
    loss = loss + 0.5 * lam * model.lstm.weight_ih_l0.square().sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def plain_run(train, val, cfg, epochs: int, device: torch.device) -> list[float]:
    """Train with a bare loop; returns the wall time of every epoch (train + validation)."""
    torch.manual_seed(cfg.seed)
    model = PlainLSTM(
        train.inputs.shape[-1],
        cfg.model.hidden_size,
        cfg.model.num_layers,
        cfg.model.dropout,
        int(train.targets.max()) + 1,
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    lam, batch_size = cfg.l2.lambda_, cfg.train.batch_size
    inputs, targets = train.inputs.to(device), train.targets.to(device)
    val_inputs, val_targets = val.inputs.to(device), val.targets.to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(inputs), generator=generator).to(device)
        for first in range(0, len(inputs), batch_size):
            plain_step(model, optimizer, inputs, targets, order[first : first + batch_size], lam)
        model.eval()
        with torch.no_grad():
            total, correct = 0.0, 0
            for first in range(0, len(val_inputs), cfg.train.eval_batch_size):
                logits = model(val_inputs[first : first + cfg.train.eval_batch_size])
                labels = val_targets[first : first + cfg.train.eval_batch_size]
                total += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum").item()
                correct += (logits.argmax(-1) == labels).sum().item()
        times.append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------------ rnnl2 runs


def rnnl2_run(cfg, runs_dir: Path) -> tuple[list[float], list[float]]:
    """Train through rnnl2.train.run; returns (full epoch times, train-only times)."""
    from rnnl2.train import Observer, run

    starts: list[float] = []

    class Clock(Observer):
        def on_epoch_start(self, epoch, steps):
            starts.append(time.perf_counter())

    result = run(cfg, runs_dir, observer=Clock())
    starts.append(time.perf_counter())  # after the last epoch: includes the final evaluation
    full = [b - a for a, b in zip(starts, starts[1:-1])]
    train_only = [cfg.data.num_train / row["samples_per_s"] for row in result.history]  # every sequence, once
    return full, train_only


def load(overrides: list[str], device: str):
    from rnnl2.config import load_config

    return load_config(SEED_CONFIG, [f"device={device}", *overrides])


def median_after_warmup(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def alternate(runs: int, first, second) -> tuple[list[float], list[float]]:
    """Run two (label, epoch-times function) sides in turn, `runs` times each; the median epoch
    time after warm-up of every run, per side. Alternating spreads a shared machine's drifts."""
    results: tuple[list[float], list[float]] = ([], [])
    for index in range(runs):
        for (_label, epoch_times), out in zip((first, second), results):
            out.append(median_after_warmup(epoch_times()))
        print(
            f"run {index + 1}: {first[0]} {results[0][-1]:.3f} s/epoch, {second[0]} {results[1][-1]:.3f} s/epoch",
            flush=True,
        )
    return results


def compare_overhead(args) -> dict:
    """rnnl2 vs the plain loop on the seed model, alternating runs."""
    from rnnl2.data import build_splits

    cfg = load([f"train.epochs={args.epochs}", *args.set], args.device)
    splits = build_splits(cfg.data)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ours, plain = alternate(
            args.runs,
            ("rnnl2", lambda: rnnl2_run(cfg, Path(tmp))[0]),
            ("plain", lambda: plain_run(splits.train, splits.val, cfg, args.epochs, device)),
        )
    result = {"rnnl2_s": statistics.median(ours), "plain_s": statistics.median(plain)}
    result["ratio"] = result["rnnl2_s"] / result["plain_s"]
    result["rnnl2_all"], result["plain_all"] = ours, plain
    return result


def compare_penalty(args) -> dict:
    """rnnl2 with the seed's L2 penalty vs the same run with λ = 0 (no penalty term), alternating."""
    cfg_on = load([f"train.epochs={args.epochs}", *args.set], args.device)
    cfg_off = load([f"train.epochs={args.epochs}", "l2.lambda=0", *args.set], args.device)
    with tempfile.TemporaryDirectory() as tmp:
        on, off = alternate(
            args.runs,
            ("penalty", lambda: rnnl2_run(cfg_on, Path(tmp))[0]),
            ("λ=0", lambda: rnnl2_run(cfg_off, Path(tmp))[0]),
        )
    result = {"penalty_s": statistics.median(on), "lambda0_s": statistics.median(off)}
    result["ratio"] = result["penalty_s"] / result["lambda0_s"]
    result["penalty_all"], result["lambda0_all"] = on, off
    return result


def penalty_blocks(args) -> dict:
    """The penalty's cost at step level: blocks of 10 steps with λ>0 and with λ=0, alternating in
    one process (slow drifts of a shared machine hit both sides alike); median block times."""
    from rnnl2.optim import build_optimizer
    from rnnl2.regularization import L2Penalty
    from rnnl2.train import Observer, train_one_epoch
    from rnnl2.setup import build_setup

    sides = {}
    for name, extra in (("penalty", []), ("lambda0", ["l2.lambda=0"])):
        s = build_setup(load([*extra, *args.set], args.device))
        optimizer = build_optimizer(s.model, s.cfg.optimizer, s.cfg.l2, s.groups)
        sides[name] = (s, optimizer, L2Penalty(s.groups), torch.Generator().manual_seed(0), [])
    for _ in range(2 + 8 * args.runs):
        for s, optimizer, penalty, generator, times in sides.values():
            start = time.perf_counter()
            train_one_epoch(s, optimizer, penalty, generator, Observer(), 10)
            times.append(time.perf_counter() - start)
    result = {f"{name}_block_s": statistics.median(side[-1][2:]) for name, side in sides.items()}
    result["ratio"] = result["penalty_block_s"] / result["lambda0_block_s"]
    result["blocks"] = len(sides["penalty"][-1]) - 2
    return result


def overhead_blocks(args) -> dict:
    """rnnl2's loop vs the plain loop at step level: blocks of 10 training steps (each starting
    with a fresh shuffle), alternating in one process; median block times."""
    from rnnl2.optim import build_optimizer
    from rnnl2.regularization import L2Penalty
    from rnnl2.train import Observer, train_one_epoch
    from rnnl2.setup import build_setup

    cfg = load([*args.set], args.device)
    s = build_setup(cfg)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    penalty, generator = L2Penalty(s.groups), torch.Generator().manual_seed(0)
    model = PlainLSTM(
        s.train.inputs.shape[-1], cfg.model.hidden_size, cfg.model.num_layers, cfg.model.dropout, s.spec.output_size
    ).to(s.device)
    plain_optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    lam, batch_size = cfg.l2.lambda_, cfg.train.batch_size
    inputs, targets = s.train.inputs, s.train.targets

    def plain_block() -> None:
        model.train()
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        for first in range(0, 10 * batch_size, batch_size):
            plain_step(model, plain_optimizer, inputs, targets, order[first : first + batch_size], lam)

    ours, plain = [], []
    for _ in range(2 + 8 * args.runs):
        start = time.perf_counter()
        train_one_epoch(s, optimizer, penalty, generator, Observer(), 10)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain_block()
        plain.append(time.perf_counter() - start)
    result = {"rnnl2_block_s": statistics.median(ours[2:]), "plain_block_s": statistics.median(plain[2:])}
    result["ratio"] = result["rnnl2_block_s"] / result["plain_block_s"]
    result["blocks"] = len(ours) - 2
    return result


def scaling(args) -> dict:
    """Train-only epoch time (epoch 2 of 2) at 1×, 2×, 4× the sequences and the sequence length."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for axis, key, base in (("sequences", "data.num_train", 1000), ("seq_len", "data.seq_len", 30)):
            for factor in (1, 2, 4):
                extra = [] if axis == "sequences" else ["data.num_train=1000"]
                cfg = load([f"{key}={base * factor}", *extra, "train.epochs=2", *args.set], args.device)
                _, train_only = rnnl2_run(cfg, Path(tmp))
                rows[f"{axis} {factor}x"] = train_only[-1]
                print(f"{axis} {factor}x: {train_only[-1]:.3f} s", flush=True)
    return rows


def median_wall(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(args) -> dict:
    """Wall time of commands that must not import torch, next to importing torch itself."""
    python = sys.executable
    result = {
        "python -c pass": median_wall([python, "-c", "pass"], args.runs),
        "rnnl2 --help": median_wall([python, "-m", "rnnl2", "--help"], args.runs),
        "rnnl2 config show": median_wall([python, "-m", "rnnl2", "config", "show", str(SEED_CONFIG)], args.runs),
        "python -c 'import torch'": median_wall([python, "-c", "import torch"], args.runs),
        "python -c 'import rnnl2.train'": median_wall([python, "-c", "import rnnl2.train"], args.runs),
    }
    probe = (
        "import time; t = time.perf_counter(); import torch; t1 = time.perf_counter(); "
        "torch.optim.Adam([torch.zeros(1, requires_grad=True)]); t2 = time.perf_counter(); "
        "print(t1 - t, t2 - t1)"
    )
    firsts = [
        subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
        for _ in range(args.runs)
    ]
    result["in-process import torch"] = statistics.median(float(a) for a, _ in firsts)
    result["first optimizer (imports torch._dynamo)"] = statistics.median(float(b) for _, b in firsts)
    return result


def cli_epochs(args) -> dict:
    """Epoch time of `rnnl2 train` itself (a subprocess), from metrics.jsonl `seconds`."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(1, args.runs // 2)):
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "rnnl2",
                        "train",
                        str(SEED_CONFIG),
                        "--runs-dir",
                        tmp,
                        "-q",
                        "--set",
                        f"train.epochs={args.epochs}",
                        "--set",
                        f"device={args.device}",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
            times.append(median_after_warmup([row["seconds"] for row in rows]))
    return {"cli_epoch_s": statistics.median(times), "cli_all": times}


def profile_loop(args) -> dict:
    """torch.profiler over 40 steps of rnnl2's loop: the ops that cost time, and rnnl2's own share."""
    from torch.profiler import ProfilerActivity, profile

    from rnnl2.train import Observer, train_one_epoch

    from rnnl2.setup import build_setup
    from rnnl2.optim import build_optimizer
    from rnnl2.regularization import L2Penalty

    cfg = load([*args.set], args.device)
    s = build_setup(cfg)
    optimizer = build_optimizer(s.model, cfg.optimizer, cfg.l2, s.groups)
    penalty = L2Penalty(s.groups)
    generator = torch.Generator().manual_seed(0)
    train_one_epoch(s, optimizer, penalty, generator, Observer(), 10)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        train_one_epoch(s, optimizer, penalty, generator, Observer(), 40)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "what",
        choices=["overhead", "penalty", "penalty-blocks", "overhead-blocks", "scaling", "startup", "profile", "cli"],
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    modes = {
        "overhead": compare_overhead,
        "penalty": compare_penalty,
        "penalty-blocks": penalty_blocks,
        "overhead-blocks": overhead_blocks,
        "scaling": scaling,
        "startup": startup,
        "profile": profile_loop,
        "cli": cli_epochs,
    }
    result = modes[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
