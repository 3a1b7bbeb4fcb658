"""Store files are private: created 0600 in a directory created 0700, before SQLite opens them.

The stores hold orders, balances, positions and the audit trail of every decision. SQLite creates
a missing file with the process umask (0644 as a rule), readable by every user of the machine; its
`-wal`, `-shm` and `-journal` files copy the main file's mode. So every store opener calls
`private_file` first: the file exists, owner-only, before SQLite touches it. An existing file keeps
the mode its owner gave it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create `path` (and its directory) owner-only if it does not exist yet; return it."""
    target = Path(path)
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return target
