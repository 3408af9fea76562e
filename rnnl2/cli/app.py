"""The Typer app and its root callback; each command module registers itself on `app`."""

from __future__ import annotations

from typing import Annotated

import typer

from .boundary import DEBUG_ENV, ErrorBoundary

app = typer.Typer(
    cls=ErrorBoundary,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect configs: the resolved values, or the JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help=f"Show the full traceback of an internal error (also {DEBUG_ENV}=1)."),
    ] = False,
) -> None:
    """Experiments on L2 regularization of recurrent networks: train, evaluate, compare.

    Exit codes: 0 success, 1 a run failed (diverged, a sweep run failed, disk full), 2 bad
    input (config, data, checkpoint, paths), 3 an internal error (a bug), 130 interrupted."""
    ctx.obj = {"verbose": verbose}


def main() -> None:
    """The `rnnl2` console script."""
    app(prog_name="rnnl2")
