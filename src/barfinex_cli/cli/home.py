"""Open the data directory's stores for a command, or say in one line why the directory fails.

The data directory (`--data-dir` / `BFX_HOME`) is where every command keeps or finds its SQLite
files. A path under a regular file, a directory the user may not write, or a file that is not a
database used to surface as a traceback from `mkdir` or `sqlite3` in whichever command touched
it first. Here the commands that write check the directory once, up front; the commands that
only read open the stores read-only, so they also work on an archive or another user's data.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from barfinex_cli.cli.state import state_of
from barfinex_cli.errors import ConfigError, DataDirUnusable, NotFound

if TYPE_CHECKING:
    from collections.abc import Iterator

    from barfinex_cli.store.audit import AuditStore
    from barfinex_cli.store.market import MarketStore


def home_of(ctx: typer.Context) -> Path:
    """Return this invocation's data directory."""
    return state_of(ctx).settings().home


def writable_home(ctx: typer.Context) -> Path:
    """Return the data directory after making sure it exists and a file can be written in it.

    Raises:
        DataDirUnusable: it cannot be created (a path under a file, say) or written.
    """
    from barfinex_cli.runtime.datadir import writable

    return writable(home_of(ctx))


def readable_file(ctx: typer.Context, name: str, label: str, missing: str) -> Path:
    """Return the path of `name` in the data directory, which must exist.

    Raises:
        NotFound: the file (the `label` store) is not there; `missing` says how to make it.
        DataDirUnusable: the data directory is not a directory.
    """
    home = home_of(ctx)
    path = home / name
    if home.exists() and not home.is_dir():
        raise DataDirUnusable(home, "not a directory", write=False)
    if not path.is_file():
        raise NotFound(
            f"no {label} at {path} — {missing}, or point --data-dir (BFX_HOME) at the "
            f"directory that holds {name}"
        )
    return path


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """Turn the failure to open or read the SQLite file `path` into one line naming it."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        reason = str(exc)
        if "not a database" in reason or "malformed" in reason:
            raise ConfigError(
                f"{path} is not a readable SQLite database ({reason}); move it away or point "
                "--data-dir (BFX_HOME) elsewhere"
            ) from None
        raise DataDirUnusable(path.parent, f"{path.name}: {reason}") from None
    except OSError as exc:
        raise DataDirUnusable(path.parent, exc.strerror or str(exc)) from None


def open_market(ctx: typer.Context, *, write: bool, must_exist: bool = False) -> MarketStore:
    """Open `market.db`: for writing (checking the directory first) or read-only.

    With `must_exist`, a missing file raises `NotFound` naming how to add data; read-only
    without it, callers check that the file exists first.
    """
    from barfinex_cli.store.market import MarketStore

    path = home_of(ctx) / "market.db"
    if must_exist:
        how = "add data with `bfx data import FILE` or `bfx data synth`"
        path = readable_file(ctx, "market.db", "market store", how)
    if write:
        path = writable_home(ctx) / "market.db"
    with sqlite_errors(path):
        return MarketStore(path, read_only=not write)


def open_audit(ctx: typer.Context) -> AuditStore:
    """Open `audit.db` read-only (it must exist)."""
    from barfinex_cli.store.audit import AuditStore

    path = readable_file(
        ctx,
        "audit.db",
        "audit store",
        "record events first (`bfx events record`, or any role that records)",
    )
    with sqlite_errors(path):
        return AuditStore(path, read_only=True)
