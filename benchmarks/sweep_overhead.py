"""Per-run overhead of a sweep: what a run costs beyond its epoch loops (process start, imports,
data, model, the final evaluation, the driver's bookkeeping), with warm workers and `--isolate`.

    overhead per run = (slots × sweep wall − Σ epoch-loop seconds) / runs

where the epoch-loop seconds are the `seconds` column of every run's metrics.jsonl (training
plus the validation pass of each epoch) and slots = --jobs (at --jobs 1 this is the issue's
(wall − Σ loops) / runs; at --jobs 2 the plain formula would count both slots' loops against one
wall clock and go negative, so each slot's wall time is counted).

    python benchmarks/sweep_overhead.py --runs 12 --epochs 3 --repeats 3 --jobs 1 2
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
    """`count` λ values: 0 and a log grid from 1e-6 to 1e-2."""
    if count == 1:
        return "0"
    return ",".join(["0", *(f"{10 ** (-6 + 4 * i / max(count - 2, 1)):.3g}" for i in range(count - 1))])


def one_sweep(runs: int, epochs: int, jobs: int, isolate: bool, config: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        sweep_dir = Path(folder) / "sweep"
        command = [
            sys.executable,
            "-m",
            "rnnl2",
            "sweep",
            str(config),
            "--grid",
            f"l2.lambda={lambdas(runs)}",
            "--set",
            f"train.epochs={epochs}",
            "--jobs",
            str(jobs),
            "--threads",
            str(max(1, 2 // jobs)),
            "--sweep-dir",
            str(sweep_dir),
            "-q",
            *(["--isolate"] if isolate else []),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - started
        loops = sum(
            json.loads(line)["seconds"]
            for path in sweep_dir.glob("*/metrics.jsonl")
            for line in path.read_text().splitlines()
            if line.strip()
        )
    return {"wall": wall, "loops": loops, "overhead": (jobs * wall - loops) / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    args = parser.parse_args()
    results = []
    for jobs in args.jobs:
        for isolate in (False, True):
            trials = [one_sweep(args.runs, args.epochs, jobs, isolate, args.config) for _ in range(args.repeats)]
            row = {
                "jobs": jobs,
                "mode": "isolate" if isolate else "warm",
                "wall_s": statistics.median(t["wall"] for t in trials),
                "loops_s": statistics.median(t["loops"] for t in trials),
                "overhead_s": statistics.median(t["overhead"] for t in trials),
                "overheads": [round(t["overhead"], 3) for t in trials],
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print("| jobs | mode | sweep wall (median) | Σ epoch loops | overhead per run (median) | all repeats |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['jobs']} | {r['mode']} | {r['wall_s']:.1f} s | {r['loops_s']:.1f} s | "
            f"**{r['overhead_s']:.2f} s** | {', '.join(map(str, r['overheads']))} |"
        )


if __name__ == "__main__":
    main()
