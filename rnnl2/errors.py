"""The errors rnnl2 reports to users as one message and an exit code, never a traceback.

Each class carries its exit code; `cli.ErrorBoundary` maps any of them to `error: <message>` and that
code, in one place (docs/scripting.md, "Exit codes"). Bad input the user can fix is 2; a run
that started and then failed (divergence, a worker that died) is 1."""

from __future__ import annotations

from typing import Any

RUN_FAILED = 1
BAD_INPUT = 2
INTERNAL_ERROR = 3  # an unexpected exception: a bug in rnnl2 (the traceback goes to a crash log)
INTERRUPTED = 130

MESSAGE_VALUE_LIMIT = 80  # characters of a value shown inside an error message


class Rnnl2Error(Exception):
    """An error the user can fix (bad config, data or checkpoint): a message, exit code 2."""

    exit_code = BAD_INPUT
    label = "error"


class ConfigError(Rnnl2Error):
    """The config file, an override or a command-line option is invalid."""


class DataError(Rnnl2Error):
    """A data file cannot be read as the config says."""


class RunLocked(Rnnl2Error):
    """Another process is writing this run folder."""


class RunFailed(Rnnl2Error):
    """A run started and then failed by itself (it diverged, or a sweep run did): exit code 1."""

    exit_code = RUN_FAILED


class Interrupted(Rnnl2Error):
    """Ctrl-C or SIGTERM stopped work after its state was saved: exit code 130."""

    exit_code = INTERRUPTED
    label = "interrupted"


class Rnnl2Warning(UserWarning):
    """Something read was damaged but could be worked around; the CLI prints `warning: <message>`."""


def short_repr(value: Any, limit: int = MESSAGE_VALUE_LIMIT) -> str:
    """repr() of at most `limit` characters, computed on a bounded copy so a huge or deeply
    aliased value (a YAML alias bomb) is never expanded in full just to be cut."""
    text = repr(bounded(value, limit))
    return text if len(text) <= limit else f"{text[: limit - 20]}… ({type(value).__name__})"


def bounded(value: Any, budget: int, depth: int = 0) -> Any:
    """A copy of `value` with at most `budget` items at each level and nesting cut at depth 4."""
    if isinstance(value, str):
        return value if len(value) <= budget else value[:budget] + "…"
    if isinstance(value, (list, tuple)):
        if depth >= 4:
            return [...]
        items = [bounded(v, budget, depth + 1) for v in value[:8]]
        return items + ([...] if len(value) > 8 else [])
    if isinstance(value, dict):
        if depth >= 4:
            return {...: ...}
        return {bounded(k, budget, depth + 1): bounded(v, budget, depth + 1) for k, v in list(value.items())[:8]}
    return value


def listing(items: list[Any], shown: int = 5) -> str:
    """`a, b, c` for a short list; `12,345 of them: a, b, c, …` for a long one."""
    names = [short_repr(i) if not isinstance(i, str) else (i if len(i) <= 40 else i[:37] + "…") for i in items[:shown]]
    if len(items) <= shown:
        return ", ".join(names)
    return f"{len(items):,} of them: {', '.join(names)}, …"
