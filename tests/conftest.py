"""Shared fixtures (helpers that are not fixtures live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY_TAGGING, write_config


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A tiny seed_tagging config file in a temporary folder."""
    return write_config(tmp_path, TINY_TAGGING)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread: tiny models run no slower, and many times faster on a busy machine.

    Use it per module with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """An MlflowClient on a fresh sqlite store (rnnl2's default kind) that every run of the test,
    its worker processes included, writes to."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts of a database store go under the working directory
    return MlflowClient(uri)
