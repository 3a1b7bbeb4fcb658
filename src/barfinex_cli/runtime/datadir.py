"""The one check of the data directory before anything is written in it.

Commands, the kernel and `bfx up` all write under `--data-dir` / `BFX_HOME`. A path under a
regular file or a folder the user may not write used to surface as a traceback from whichever
`mkdir` or `sqlite3` call touched it first; here it becomes one `DataDirUnusable` line. A data
directory made here is owner-only (0700), like the store files in it (0600, `store.private`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from barfinex_cli.errors import DataDirUnusable


def writable(home: Path) -> Path:
    """Return `home` after making sure it exists and a file can be written in it.

    Raises:
        DataDirUnusable: it cannot be created (a path under a file, say) or written.
    """
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: see store.private
        with tempfile.TemporaryFile(dir=home, prefix=".bfx-write-check-"):
            pass
    except OSError as exc:
        raise DataDirUnusable(home, exc.strerror or str(exc)) from None
    return home
