"""Open an SQLite file for reading only, even inside a directory nobody may write.

The read-only commands (`bfx events query`, `bfx trace`, `bfx data list`, `bfx data gaps`) must
work on an archived or mounted data directory, or one that belongs to another user. Opening a
store the usual way would try to create it, switch it to WAL and add columns: all writes.

`mode=ro` is not enough on its own: a WAL database still needs its `-shm` file, which SQLite
cannot create in a directory it may not write ("attempt to write a readonly database"). There,
and only there, the file is opened `immutable=1` (no locks, no shared memory). That is sound for
the case it serves: a writer would need to create the same `-shm` file in that same directory.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Return a connection that can only read the SQLite file at `path` (which must exist).

    Raises:
        sqlite3.Error: the file cannot be opened or is not an SQLite database.
    """
    uri = Path(path).resolve().as_uri()
    try:
        return _checked(f"{uri}?mode=ro")
    except sqlite3.OperationalError:
        if os.access(Path(path).resolve().parent, os.W_OK):
            raise  # not the read-only directory case: report the real failure
    return _checked(f"{uri}?mode=ro&immutable=1")


def _checked(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn
