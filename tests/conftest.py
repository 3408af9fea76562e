"""Shared fixtures: tiny configs that train in well under a second on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_TAGGING = {
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"kind": "seed_tagging", "input_dim": 3, "num_classes": 3, "seq_len": 5,
             "num_train": 64, "num_val": 16, "num_test": 16},
    "model": {"cell": "lstm", "hidden_size": 8},
    "l2": {"lambda": 1e-3},
    "train": {"epochs": 2, "batch_size": 16},
}


def write_config(folder: Path, raw: dict, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A tiny seed_tagging config file in a temporary folder."""
    return write_config(tmp_path, TINY_TAGGING)
