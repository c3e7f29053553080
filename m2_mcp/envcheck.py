"""Numeric settings read from the environment, checked when a command starts (`serve`, `fix`):
a bad value is one usage error naming the variable before any work, never a silent default or a
failure in the middle of a run. The modules that use a setting read it where they need it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from m2_mcp.errors import UsageError

# name: (whole number?, smallest allowed value, the value must be above it rather than at least it)
NUMBERS: dict[str, tuple[bool, float, bool]] = {
    "M2_MCP_OUTPUT_TOKENS": (True, 1, False),
    "M2_MCP_MAX_TASKS": (True, 1, False),
    "M2_MCP_TASK_TIMEOUT": (False, 0, True),
    "M2_MCP_CHECKPOINTS_KEEP": (True, 1, False),
    "M2_MCP_CHECKPOINTS_MAX_DAYS": (False, 1, False),
    "M2_PRICE_IN": (False, 0, False),
    "M2_PRICE_OUT": (False, 0, False),
}


def number(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """The variable's value (or `default` when unset or empty); UsageError when it is not a valid number."""
    whole, low, strict = NUMBERS[name]
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low or (strict and value == low):
        kind = "a whole number" if whole else "a finite number"
        bound = f"above {low:g}" if strict else f"at least {low:g}"
        raise UsageError(f"{name} must be {kind} {bound}, not {raw!r}")
    return value


def check_env(environ: Mapping[str, str] | None = None) -> None:
    """Every numeric setting above; the first bad one is a UsageError."""
    for name in NUMBERS:
        number(name, 0, environ)
