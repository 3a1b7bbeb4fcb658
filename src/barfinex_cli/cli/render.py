"""Output helpers shared by the commands: data to stdout, diagnostics to stderr."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@cache
def out() -> Console:
    """Return the console for data (stdout)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@cache
def err() -> Console:
    """Return the console for diagnostics (stderr)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """Print one red error line to stderr."""
    from rich.text import Text

    err().print(Text(f"error: {message}", style="bold red"))


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    """Print `data` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def print_json_line(data: Any) -> None:
    """Print `data` as one compact JSON line to stdout and flush (for pipes)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=_default) + "\n")
    sys.stdout.flush()
