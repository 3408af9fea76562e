"""Pick the torch device a run asks for, with a clear error when it is not there; and the switches
that make CUDA runs deterministic (`train.deterministic`)."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError, short_repr


def resolve_device(requested: str) -> torch.device:
    """auto → CUDA, then MPS, else CPU; an explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(
            f"device: {short_repr(requested)} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {short_repr(requested)} is not supported; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {requested!r} requested, but CUDA is not available here")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {requested!r} requested, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device: {requested!r} requested, but MPS is not available here")
    return device


def describe_device(device: torch.device) -> str:
    """A human name for the run record: `cpu`, or `cuda:0 (NVIDIA H100 ...)`."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS's workspace setting that makes its GEMMs deterministic (CUDA ≥ 10.2; NVIDIA's docs)."""


def use_deterministic(on: bool) -> None:
    """`train.deterministic`: deterministic kernels only (an op without one raises), cuDNN's
    deterministic algorithms without autotuning, and CUBLAS_WORKSPACE_CONFIG set before the first
    cuBLAS call. Off leaves torch's defaults (a warm worker puts them back between runs)."""
    if not on:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
