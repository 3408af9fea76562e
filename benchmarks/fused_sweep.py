"""Runs per hour of a λ grid: `rnnl2 sweep --fused` (the K runs as one block-diagonal model in
one process) against the same sweep in warm workers, timed side by side, end to end (driver,
data, every run's folder, checkpoints and final evaluation included).

The grid: K λ of `configs/seed_lstm.yaml` with dropout 0 (a fused group refuses dropout, whose
masks its members would share), E epochs. Each repeat runs both commands into fresh folders,
alternating which goes first; prints the median wall time of each, runs per hour, the ratio,
and the largest difference between a fused member's test loss and its separate run's.

    python benchmarks/fused_sweep.py --members 8 --epochs 2 --jobs 2 --threads 1 --repeats 3
    python benchmarks/fused_sweep.py --members 8 32 --device cuda --runs-per-gpu 8   # benchmarks/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lambdas(count: int) -> str:
    """0 and count − 1 values log-spaced from 1e-6 to 1e-1."""
    values = [0.0] + [10 ** (-6 + 5 * i / max(1, count - 2)) for i in range(count - 1)]
    return ",".join(f"{v:.3g}" for v in values)


def sweep(folder: Path, members: int, args: argparse.Namespace, fused: bool) -> tuple[float, dict[str, float]]:
    """Wall seconds of one sweep, and each run's test loss by name."""
    command = [sys.executable, "-m", "rnnl2", "sweep", str(ROOT / "configs" / "seed_lstm.yaml")]
    command += ["--grid", f"l2.lambda={lambdas(members)}", "--sweep-dir", str(folder), "-q", "--json"]
    command += ["--set", "model.dropout=0", "--set", f"train.epochs={args.epochs}", "--set", f"device={args.device}"]
    if fused:
        command += ["--fused", "--threads", str(args.jobs * args.threads)]
    elif args.runs_per_gpu:
        command += ["--runs-per-gpu", str(args.runs_per_gpu)]
    else:
        command += ["--jobs", str(args.jobs), "--threads", str(args.threads)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)}\nexit {done.returncode}: {done.stderr[-2000:]}")
    rows = json.loads(done.stdout)["table"]["rows"]
    return wall, {row["run"]: row["test_loss"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="warm workers (CPU); the fused process gets jobs × threads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per warm worker")
    parser.add_argument("--runs-per-gpu", type=int, default=0, help="CUDA: the warm-worker sweep's --runs-per-gpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    side = (
        f"--runs-per-gpu {args.runs_per_gpu}" if args.runs_per_gpu else f"--jobs {args.jobs} --threads {args.threads}"
    )
    print(f"seed_lstm shapes, dropout 0, {args.epochs} epochs, device {args.device}; warm workers: {side}")
    for members in args.members:
        walls: dict[bool, list[float]] = {True: [], False: []}
        worst = 0.0
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                losses = {}
                for fused in (repeat % 2 == 0, repeat % 2 == 1):  # alternate which runs first
                    wall, losses[fused] = sweep(Path(tmp) / f"fused-{fused}", members, args, fused)
                    walls[fused].append(wall)
                worst = max(worst, max(abs(losses[True][name] - losses[False][name]) for name in losses[False]))
        fused_s, workers_s = statistics.median(walls[True]), statistics.median(walls[False])
        print(
            f"K = {members}: fused {fused_s:.1f} s ({3600 * members / fused_s:.0f} runs/h), warm workers "
            f"{workers_s:.1f} s ({3600 * members / workers_s:.0f} runs/h): fused × {workers_s / fused_s:.2f} the runs "
            f"per hour; walls {[round(w, 1) for w in walls[True]]} / {[round(w, 1) for w in walls[False]]}; "
            f"largest |Δ test_loss| {worst:.1e}"
        )


if __name__ == "__main__":
    main()
