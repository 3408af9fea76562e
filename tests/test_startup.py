"""Start-up: `rnnl2 --help`, `rnnl2 config show` and `config schema` never import torch (it
takes seconds to import; see BENCHMARKS.md "Training overhead" for the measured times)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import sys
    from rnnl2.cli import app
    try:
        app(sys.argv[1:], standalone_mode=False)
    except SystemExit:
        pass
    heavy = sorted(m for m in ("torch", "numpy", "pandas") if m in sys.modules)
    print("HEAVY:" + ",".join(heavy))
""")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["config", "show", str(ROOT / "configs" / "seed_lstm.yaml"), "--set", "train.epochs=3"],
        ["config", "schema"],
        ["train", "--help"],
    ],
    ids=["help", "config-show", "config-schema", "train-help"],
)
def test_command_does_not_import_torch(args):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY:", done.stdout[-500:]


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, rnnl2.cli; print('torch' in sys.modules, 'rnnl2.train' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr
