"""Windowing memory: cutting lookback windows from a 1,000,000-row × 8-column CSV must cost no more
memory than the table itself, because windows are `unfold` views. Each stage runs in a fresh process
and reports its peak RSS:

  imports   python + torch + pandas + rnnl2, nothing read
  table     the CSV read and checked, as one float32 tensor (what any loader must hold)
  windows   build_splits: scaled table, train/val/test windows (lookback 96, horizon 24)
  batches   windows + one full pass of shuffled batches of 256 (gathered per batch)

    python benchmarks/window_memory.py [--rows 1000000] [--csv /tmp/rnnl2-window-memory.csv]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = [f"c{i}" for i in range(8)]


def write_csv(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    values = np.random.default_rng(0).standard_normal((rows, len(COLUMNS))).cumsum(axis=0)
    pd.DataFrame(values, columns=COLUMNS).to_csv(path, index=False, float_format="%.5f")


def stage(name: str, csv: Path) -> dict:
    import torch

    from rnnl2.config import ForecastData
    from rnnl2.data import build_splits
    from rnnl2.data.series import check_numeric, read_table

    cfg = ForecastData(path=str(csv), lookback=96, horizon=24, ratios=(0.7, 0.1, 0.2))
    started = time.perf_counter()
    info: dict = {}
    if name == "table":
        frame = read_table(csv)
        check_numeric(frame, COLUMNS, csv)
        table = torch.from_numpy(frame.to_numpy(dtype="float32"))
        del frame
        info["table_mb"] = table.numel() * 4 / 2**20
    elif name in ("windows", "batches"):
        splits = build_splits(cfg)
        info["windows"] = sum(len(s) for s in (splits.train, splits.val, splits.test))
        info["materialized_mb"] = info["windows"] * 96 * len(COLUMNS) * 4 / 2**20
        if name == "batches":
            generator = torch.Generator().manual_seed(0)
            for batch in splits.train.batches(256, generator):
                batch.inputs.sum()
    info["seconds"] = time.perf_counter() - started
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--csv", type=Path, default=Path("/tmp/rnnl2-window-memory.csv"))
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.csv)))
        return 0
    if not args.csv.exists():
        write_csv(args.csv, args.rows)
    print(f"{args.csv}: {args.csv.stat().st_size / 2**20:.1f} MB on disk, {args.rows:,} rows × {len(COLUMNS)} columns")
    results = {}
    for name in ("imports", "table", "windows", "batches"):
        command = [sys.executable, __file__, "--stage", name, "--csv", str(args.csv)]
        results[name] = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(f"{name:8s} peak RSS {results[name]['peak_rss_mb']:7.1f} MB  ({results[name]['seconds']:.1f}s)")
    table_mb = results["table"]["table_mb"]
    extra = results["windows"]["peak_rss_mb"] - results["table"]["peak_rss_mb"]
    print(
        f"float32 table {table_mb:.1f} MB; windows add {extra:+.1f} MB over reading the table "
        f"({results['windows']['windows']:,} windows; materialized they would be {results['windows']['materialized_mb']:,.0f} MB)"
    )
    return 0 if extra <= table_mb else 1


if __name__ == "__main__":
    sys.exit(main())
