"""Output helpers shared by the commands: data to stdout, diagnostics to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
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


def stream_json(head: dict[str, Any], key: str, items: Iterable[Any], *, chunk: int = 1000) -> None:
    """Print one JSON object to stdout: `head`'s fields, then `key` as an array of `items`.

    The array is written as it is produced, one compact item per line, `chunk` items per write:
    a million items never become one string in memory. The whole output is one JSON document,
    the shape `print_json({**head, key: list(items)})` prints.
    """
    encode = json.JSONEncoder(separators=(",", ":"), default=_default).encode
    write = sys.stdout.write
    opening = json.dumps(head, indent=2, default=_default)
    write(f"{opening[:-2]},\n  {json.dumps(key)}: [" if head else f"{{\n  {json.dumps(key)}: [")
    batch: list[str] = []
    first = True
    for item in items:
        batch.append(encode(item))
        if len(batch) == chunk:
            write(("\n" if first else ",\n") + ",\n".join(batch))
            batch, first = [], False
    if batch:
        write(("\n" if first else ",\n") + ",\n".join(batch))
        first = False
    write("]\n}\n" if first else "\n]\n}\n")
    sys.stdout.flush()
