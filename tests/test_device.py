"""device.py: every device a config or --device names either resolves or is a ConfigError (exit 2)."""

from __future__ import annotations

import os

import pytest
import torch

from rnnl2.device import resolve_device
from rnnl2.errors import ConfigError


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("name", ["foo", "", "cuda:-1", "cpu:x", "meta", "xla"])
def test_an_unknown_device_is_a_config_error(name):
    with pytest.raises(ConfigError, match="device:"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:7")


def test_deterministic_sets_torch_cudnn_and_cublas_and_is_recorded(tmp_path, monkeypatch):
    """`train.deterministic: true`: deterministic algorithms, cuDNN deterministic without autotuning,
    CUBLAS_WORKSPACE_CONFIG; summary.json says so. The flags are put back afterwards."""
    from helpers import TINY_TAGGING

    from rnnl2.config import validate_config
    from rnnl2.train import run

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    benchmark = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        cfg = validate_config(TINY_TAGGING | {"train": {**TINY_TAGGING["train"], "epochs": 1, "deterministic": True}})
        summary = run(cfg, run_dir=tmp_path / "run").summary
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert summary["deterministic"] is True and summary["precision"] == "fp32"
    finally:
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1], benchmark
