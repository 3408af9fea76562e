"""Shared test helpers: tiny configs that train in well under a second on the CPU, config files,
and made-up finished run folders. Fixtures live in conftest.py; tests import these directly."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

TINY_TAGGING = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {
        "kind": "seed_tagging",
        "input_dim": 3,
        "num_classes": 3,
        "seq_len": 5,
        "num_train": 64,
        "num_val": 16,
        "num_test": 16,
    },
    "model": {"cell": "lstm", "hidden_size": 8},
    "l2": {"lambda": 1e-3},
    "train": {"epochs": 2, "batch_size": 16},
}


def write_config(folder: Path, raw: dict, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def write_fake_run(folder: Path, lam: float, seed: int, epochs: int = 4, **config) -> Path:
    """A finished run folder as `rnnl2 train` writes it (config.yaml, metrics.jsonl, summary.json),
    with made-up numbers: validation loss is lowest at λ = 1e-3, so compare/report have a winner."""
    import json
    import math

    run_dir = folder / f"lam{lam:g}-seed{seed}"
    run_dir.mkdir(parents=True)
    raw = {**TINY_TAGGING, "seed": seed, "l2": {"lambda": lam}, **config}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    distance = (math.log10(lam) + 3) ** 2 if lam > 0 else 4.0
    rows = []
    for epoch in range(1, epochs + 1):
        train = 1.0 / epoch + 0.01 * seed
        val = train + 0.05 * distance + 0.2 / epoch
        rows.append(
            {
                "epoch": epoch,
                "step": 4 * epoch,
                "train_data_loss": train,
                "penalty": lam,
                "train_loss": train + lam,
                "val_loss": val,
                "val_accuracy": 1 - val / 3,
                "lr": 1e-3,
                "weight_norm": 5.0 / (1 + 100 * lam) + 0.1 * epoch,
                "grad_norm": 1.0 / epoch,
                "seconds": 0.1,
                "samples_per_s": 640.0,
            }
        )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    best = min(rows, key=lambda r: r["val_loss"])
    summary = {
        "status": "completed",
        "name": raw["name"],
        "run_dir": str(run_dir),
        "best_epoch": best["epoch"],
        "best_metric": "val_loss",
        "best_value": best["val_loss"],
        "epochs_run": epochs,
        "steps": 4 * epochs,
        "final": {k: v for k, v in rows[-1].items() if k.startswith(("val_", "train_"))},
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "test_loss": best["val_loss"] + 0.01,
        "test_accuracy": best["val_accuracy"] - 0.01,
        "wall_seconds": 1.5,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def rnnl2_argv(*args: str) -> list[str]:
    """`python -m rnnl2 ARGS`, as a subprocess argument list (this interpreter, this checkout)."""
    return [sys.executable, "-m", "rnnl2", *args]


def run_rnnl2(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `rnnl2 ARGS` in a fresh process to the end, capturing its output as text."""
    return subprocess.run(rnnl2_argv(*args), capture_output=True, text=True, timeout=timeout, env=env)


GLOO_ABORT = "terminate called without an active exception"
"""What a rank prints when a gloo thread aborts the process (C++ std::terminate, SIGABRT): a known
flake of gloo on a loaded machine (pytorch/pytorch#65231), not an error of rnnl2's; seen about once
in eight two-rank jobs here, so such a job is run a second time, and only for it."""


def run_two_ranks(argv: list[str], **options: Any) -> subprocess.CompletedProcess:
    """`subprocess.run` of a two-rank job, once more when a rank aborted inside gloo (GLOO_ABORT):
    the job is resumable or repeatable, so the second run's result is the one asserted."""
    done = subprocess.run(argv, capture_output=True, text=True, **options)
    if done.returncode != 0 and GLOO_ABORT in done.stderr:
        warnings.warn(f"a rank aborted inside gloo ({GLOO_ABORT!r}); running the job once more", stacklevel=2)
        done = subprocess.run(argv, capture_output=True, text=True, **options)
    return done


TIMING = ("seconds", "samples_per_s")
"""metrics.csv columns that measure the machine, not the run."""


def metrics_without_timing(run_dir: Path) -> list[dict]:
    from rnnl2.runs import read_metrics

    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(run_dir)]
