"""What several commands share: option types declared once, the choices they take, the
launch options as one `Launch`, and the checks an output path gets before any work."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import ConfigError


class Split(str, enum.Enum):
    train = "train"
    val = "val"
    test = "test"


class ForkAt(str, enum.Enum):
    best = "best"
    last = "last"


class Backend(str, enum.Enum):
    local = "local"
    ray = "ray"
    slurm = "slurm"


def build_launch(
    backend: Backend,
    jobs: int | None,
    runs_per_gpu: int | None,
    threads: int | None,
    isolate: bool,
    ray_address: str | None,
    slurm: list[str] | None,
    *,
    fail_fast: bool = False,
) -> Any:
    """The launch options `sweep` and `tune` share, as one `Launch`: the GPUs seen here (local
    backend only) and the parallel runs they allow, decided in one place."""
    from ..launch import Launch, gpu_ids, jobs_for

    gpus = gpu_ids() if backend is Backend.local else []
    return Launch(
        jobs=jobs_for(jobs, gpus, runs_per_gpu, backend.value),
        backend=backend.value,
        ray_address=ray_address,
        fail_fast=fail_fast,
        gpus=gpus,
        threads=threads,
        isolate=isolate,
        runs_per_gpu=runs_per_gpu or 1,
        slurm=slurm or [],
    )


ConfigPath = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML config file.")]
Threads = Annotated[
    Optional[int],
    typer.Option(
        "--threads", min=1, help="CPU threads per run (default: $OMP_NUM_THREADS, else torch's / cores ÷ jobs)."
    ),
]
RunsPerGpu = Annotated[
    Optional[int],
    typer.Option(
        "--runs-per-gpu",
        min=1,
        help="K runs share each GPU: local backend, K per visible GPU (default --jobs: K × GPUs); Ray: num_gpus=1/K.",
    ),
]
Columns = Annotated[
    Optional[str],
    typer.Option(
        help="Numeric columns to show, comma-separated: any number in summary.json (test_mae, "
        "baselines.repeat_last.test_mse), vs_baseline, gap, wall_s, ... (default: the metrics)."
    ),
]
Isolate = Annotated[
    bool,
    typer.Option(
        "--isolate",
        help="Local backend: a fresh process for every run, instead of --jobs warm workers that run many each.",
    ),
]
SlurmOptions = Annotated[
    Optional[list[str]],
    typer.Option(
        "--slurm",
        help="--backend slurm: a submitit job parameter KEY=VALUE (repeatable), e.g. partition=gpu, "
        "timeout_min=120, gpus_per_node=1, cpus_per_task=4; non-generic keys go to SLURM (slurm_KEY).",
    ),
]
BackendOption = Annotated[Backend, typer.Option("--backend", help="local (processes on this machine), ray or slurm.")]
RayAddress = Annotated[
    Optional[str], typer.Option("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only failures and the result.")]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a key: --set l2.lambda=1e-4 (value parsed as YAML; repeatable)."),
]


class TableFormatChoice(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


TableFormat = Optional[TableFormatChoice]


class Scheduler(str, enum.Enum):
    halving = "halving"
    hyperband = "hyperband"
    pbt = "pbt"
    late = "late"


SchedulerChoice = Optional[Scheduler]


class Sampler(str, enum.Enum):
    random = "random"
    grid = "grid"
    tpe = "tpe"


def column_list(columns: str | None) -> list[str] | None:
    """`--columns a,b,c` as a list (None: the default columns)."""
    return [c.strip() for c in columns.split(",") if c.strip()] if columns else None


def check_output_file(path: Path) -> None:
    """Before any work: an output file must be writable where it is asked for."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name for the output")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: its folder {path.parent} does not exist")
