"""ETT protocol check: the Repeat baseline (last input row repeated over the horizon) computed
through rnnl2's own loader must give the published numbers, ETTh1 1.294/0.713 and ETTh2
0.432/0.422 (standardized MSE/MAE, horizon 96, test windows). Usage:

    RNNL2_DATA=/work/shared/data python benchmarks/ett_repeat.py [--lookback 96]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rnnl2.config import load_config
from rnnl2.data import build_splits

EXPECTED = {"etth1": (1.294, 0.713), "etth2": (0.432, 0.422)}
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def repeat_baseline(split) -> tuple[float, float]:
    """MSE and MAE of forecasting every horizon step with the window's last observed row."""
    squared, absolute, count = 0.0, 0.0, 0
    for batch in split.batches(512):
        error = batch.inputs[:, -1:, :].expand_as(batch.targets) - batch.targets
        squared += error.double().square().sum().item()
        absolute += error.double().abs().sum().item()
        count += error.numel()
    return squared / count, absolute / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookback", type=int, default=96, help="L; Repeat does not depend on it")
    args = parser.parse_args()
    ok = True
    for name, (want_mse, want_mae) in EXPECTED.items():
        cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.lookback={args.lookback}", "data.window_norm=false"])
        splits = build_splits(cfg.data)
        mse, mae = repeat_baseline(splits.test)
        match = round(mse, 3) == want_mse and round(mae, 3) == want_mae
        ok &= match
        print(
            f"{name}: {len(splits.test)} test windows  Repeat MSE {mse:.4f}  MAE {mae:.4f}  "
            f"(expected {want_mse}/{want_mae}) {'OK' if match else 'MISMATCH'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
