"""One module per CLI command: HELP, add_arguments(parser), run(args) -> exit code.

Keep heavy imports inside run() so `m2-mcp --help` stays fast.
"""

import argparse
import math


def finite_float(text: str) -> float:
    """argparse type for every float option: a finite number (`nan`, `inf` are refused as usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value
