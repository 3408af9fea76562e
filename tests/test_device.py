"""device.py: every device a config or --device names either resolves or is a ConfigError (exit 2)."""

from __future__ import annotations

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
