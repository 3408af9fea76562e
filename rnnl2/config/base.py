"""What every config section shares: strict pydantic models, and path fields that expand
`~`, `$VAR` and relative paths when a config is loaded."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo


class Section(BaseModel):
    """A config section: unknown keys refused, frozen, and no float field takes NaN or ±inf
    (`.nan` in YAML would otherwise pass `ge=0` checks silently for inf, and poison a run)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True, allow_inf_nan=False
    )


MAX_SEED = 2**63 - 1
"""The largest seed: torch.manual_seed and torch.Generator take a 64-bit integer."""


def check_seed(value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"must be a whole number from 0 to 2**63 - 1 = {MAX_SEED}")
    return value


Seed = Annotated[int, AfterValidator(check_seed), Field(json_schema_extra={"minimum": 0, "maximum": MAX_SEED})]
"""A random seed, 0 … 2**63 − 1; checked here so a seed torch cannot take fails at load, naming the key."""


def expand_path(value: str, info: ValidationInfo) -> str:
    """Expand `~`, `$VAR` and `${VAR}`; resolve a relative path against the config file's folder.

    A path that starts with a variable whose value is relative (`RNNL2_DATA=../shared/data`)
    resolves against the working directory instead: the user typed that value in a shell,
    where relative means "from here", as it does for every other command they type.
    An unset variable is an error that names it, rather than a path with a literal `$` in it.
    """
    for match in re.finditer(r"\$(?:\{(\w+)\}|(\w+))", value):
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise ValueError(f"environment variable ${name} is not set")
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and starts_with_variable(value):
        path = Path.cwd() / path
    elif not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)


def starts_with_variable(value: str) -> bool:
    return re.match(r"\$(?:\{\w+\}|\w+)", value) is not None


FilePath = Annotated[str, AfterValidator(expand_path)]
"""A path field of a data config: expanded and made absolute when the config is loaded."""
