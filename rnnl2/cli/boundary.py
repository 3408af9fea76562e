"""The one error boundary of the CLI: errors become messages and exit codes here and nowhere
else, and SIGTERM behaves like Ctrl-C from a command's first line."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import BAD_INPUT, INTERNAL_ERROR, INTERRUPTED, RUN_FAILED, Rnnl2Error, Rnnl2Warning
from .console import err

DEBUG_ENV = "RNNL2_DEBUG"
RUNTIME_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM}  # the machine failed, not the input


def usage_exceptions() -> tuple[type[BaseException], ...]:
    """What the command-line parser raises and handles itself (usage errors, exits): Typer's own
    classes, and click's where this Typer is built on click."""
    classes: list[type[BaseException]] = [typer.Exit, typer.Abort]
    if hasattr(typer, "TyperException"):
        classes.append(typer.TyperException)
    if "click" in sys.modules:
        click = sys.modules["click"]
        classes += [click.ClickException, click.exceptions.Exit, click.exceptions.Abort]
    return tuple(classes)


class ErrorBoundary(TyperGroup):
    """The one place where errors become messages and exit codes (docs/scripting.md, "Exit codes"):

    - an `Rnnl2Error` prints `error: <message>` and exits with the code its class carries
      (2 bad input, 1 a run that failed, 130 interrupted);
    - Ctrl-C or SIGTERM anywhere (start-up included) exits 130;
    - an `OSError` prints its path and reason: exit 1 for a full disk or I/O error, else 2;
    - anything else is a bug: one line, the traceback in a crash log (or in full with
      `rnnl2 -v ...` or RNNL2_DEBUG=1), exit 3.
    Warnings from the library (damaged lines skipped, ...) print as `warning: <message>`."""

    def invoke(self, ctx: typer.Context) -> Any:
        previous = install_sigterm()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", Rnnl2Warning)
                warnings.showwarning = show_warning
                return super().invoke(ctx)
        except usage_exceptions():
            raise
        except Rnnl2Error as error:
            if not other_rank():  # under torchrun rank 0 speaks for all: one message, not one per rank
                err.print(f"[red]{error.label}:[/red] {escape(str(error))}", highlight=False)
            raise typer.Exit(code=error.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]", highlight=False)
            raise typer.Exit(code=INTERRUPTED) from None
        except OSError as error:
            where = error.filename if error.filename is not None else "a file"
            reason = error.strerror or str(error) or type(error).__name__
            err.print(f"[red]error:[/red] {escape(str(where))}: {escape(reason)}", highlight=False)
            raise typer.Exit(code=RUN_FAILED if error.errno in RUNTIME_ERRNOS else BAD_INPUT) from None
        except Exception as error:
            if SIGNALLED.is_set():  # a signal's KeyboardInterrupt that a library wrapped (pydantic does)
                err.print("[yellow]interrupted[/yellow]", highlight=False)
                raise typer.Exit(code=INTERRUPTED) from None
            # a bug: keep the traceback, show one line
            raise typer.Exit(code=report_crash(error, debug=debug_requested(ctx))) from None
        finally:
            restore_sigterm(previous)


def other_rank() -> bool:
    """A torchrun rank other than 0 (read from the environment: no torch import here)."""
    return os.environ.get("RANK", "0") not in ("", "0")


SIGNALLED = threading.Event()
"""Set when SIGTERM arrived during this command: an exception that follows is the signal's
KeyboardInterrupt wrapped by a library (pydantic turns one raised inside a serializer into a
PydanticSerializationError), so it exits 130 as an interruption, not 3 as a bug."""


def install_sigterm() -> Any:
    """SIGTERM behaves like Ctrl-C from the first line of a command (the training loop turns
    both into "save and stop"); only the main thread can install handlers."""
    SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_keyboard_interrupt)


def restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    SIGNALLED.set()
    raise KeyboardInterrupt


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)


def debug_requested(ctx: typer.Context) -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or bool((ctx.obj or {}).get("verbose"))


def crash_log_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rnnl2" / "crash.log"


def report_crash(error: Exception, debug: bool) -> int:
    """One line for an unexpected error; the traceback goes to the crash log (or to stderr)."""
    text = "".join(traceback.format_exception(error))
    if debug:
        sys.stderr.write(text)
        err.print(
            f"[red]internal error:[/red] {escape(type(error).__name__)} (a bug in rnnl2; traceback above)",
            highlight=False,
        )
        return INTERNAL_ERROR
    where = crash_log_path()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with where.open("a", encoding="utf-8") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} rnnl2 {' '.join(sys.argv[1:])}\n{text}")
        saved = f"the traceback is in {where}"
    except OSError:
        saved = f"set {DEBUG_ENV}=1 to see the traceback"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    err.print(
        f"[red]internal error:[/red] {escape(type(error).__name__)}: {escape(first)} — a bug in rnnl2; {saved} "
        f"(or rerun with rnnl2 -v …)",
        highlight=False,
    )
    return INTERNAL_ERROR
