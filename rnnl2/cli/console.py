"""The two consoles every command prints to: stdout for results, stderr for the rest."""

from __future__ import annotations

from rich.console import Console

out = Console(soft_wrap=True)  # results: the run folder, tables, JSON
err = Console(stderr=True, soft_wrap=True)  # progress, logs and errors
