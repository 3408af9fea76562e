"""Loading text: time and peak memory to read and numericalize a ~100 MB file (Tiny Shakespeare
repeated) into `text_lm` splits, at char and word level. Each level runs in a fresh process so
its peak RSS is its own.

    RNNL2_DATA=../shared/data python benchmarks/load_text.py [--megabytes 100]  (MiB)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(path: str, level: str) -> dict:
    """In this process: build the splits once, report seconds and the peak RSS above the baseline."""
    import torch  # noqa: F401  (imported before the baseline is taken)

    from rnnl2.config import TextLMData
    from rnnl2.data import build_splits

    baseline = peak_rss_mb()
    started = time.perf_counter()
    splits = build_splits(TextLMData(path=path, level=level))
    seconds = time.perf_counter() - started
    tokens = sum(len(s.inputs) for s in (splits.train, splits.val))
    return {
        "level": level,
        "seconds": seconds,
        "tokens": tokens,
        "vocab": splits.spec.input_size,
        "baseline_mb": baseline,
        "peak_mb": peak_rss_mb(),
        "dtype": str(splits.train.inputs.dtype),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "LEVEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    source = Path(os.environ.get("RNNL2_DATA", "../shared/data")) / "tinyshakespeare" / "input.txt"
    text = source.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.txt"
        with path.open("wb") as handle:
            for _ in range(int(args.megabytes * 2**20 / len(text)) + 1):
                handle.write(text)
        size_mb = path.stat().st_size / 2**20
        print(
            f"file: {size_mb:.1f} MiB ({source.name} repeated), torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}"
        )
        print(
            f"{'level':<6} {'seconds':>8} {'tokens':>12} {'vocab':>6} {'dtype':>12} {'peak RSS MiB':>12} {'above baseline MiB':>18} {'x file':>7}"
        )
        for level in ("char", "word"):
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(path), level], check=True, capture_output=True, text=True
            ).stdout
            row = json.loads(output)
            extra = row["peak_mb"] - row["baseline_mb"]
            print(
                f"{level:<6} {row['seconds']:>8.2f} {row['tokens']:>12,} {row['vocab']:>6} {row['dtype']:>12} "
                f"{row['peak_mb']:>12.0f} {extra:>18.0f} {extra / size_mb:>7.2f}"
            )


if __name__ == "__main__":
    main()
