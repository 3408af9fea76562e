"""The `rnnl2` command line: the only package that prints. Torch is imported inside the
commands that need it, so `rnnl2 --help` and `rnnl2 config show` answer at once.

`boundary` maps errors to exit codes, `app` is the Typer app, `options` and `render` are what
the commands share, and each `*_commands` module registers one group of commands."""

from __future__ import annotations

from . import run_commands, search_commands, table_commands  # noqa: F401  (they register the commands)
from .app import app, main
from .boundary import ErrorBoundary
from .render import comparison_table

__all__ = ["ErrorBoundary", "app", "comparison_table", "main"]
