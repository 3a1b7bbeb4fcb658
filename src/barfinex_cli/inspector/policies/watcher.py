"""Reload the policy file when it changes, so a risk rule changes without restarting anything.

The watcher polls the file's stat (modification time, size, inode — an editor that saves by
renaming a new file over the old one changes the inode) and reloads only when it moved. A new
file is validated in full before it replaces the policies in force; an edit that fails
validation, or a file that disappears, keeps the old policies and yields the reason, which the
service publishes as `inspector.alert`. A later edit that fixes the file is picked up as usual.
Touching the file without changing its bytes reloads nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from barfinex_cli.errors import ConfigError
from barfinex_cli.inspector.policies.loading import PolicySet, load_policies

_Stamp = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class PolicyReload:
    """What a poll found: new policies now in force, or an alert about a refused edit."""

    policies: PolicySet | None
    """The policies now in force; None when the edit was refused and the old ones stay."""
    alert: str | None = None
    """Why the edit was refused (file, key and reason), for `inspector.alert`."""


class PolicyWatcher:
    """Keep the policies of one file current; `poll()` on the clock or every few seconds."""

    def __init__(self, path: Path, policies: PolicySet | None = None) -> None:
        """Watch `path`, starting from `policies` (loaded from `path` now when not given).

        Raises:
            ConfigError: `policies` was not given and the file is invalid (the inspector
                fails closed and does not start).
        """
        self._path = path
        self._stamp = self._stat()
        self._policies = policies if policies is not None else load_policies(path)

    @property
    def path(self) -> Path:
        """The file being watched."""
        return self._path

    @property
    def policies(self) -> PolicySet:
        """The policies in force: the last version of the file that validated."""
        return self._policies

    def _stat(self) -> _Stamp | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> PolicyReload | None:
        """Reload the file if it changed since the last poll; None when nothing changed."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        keeping = f"keeping the policies in force (digest {self._policies.digest})"
        if stamp is None:
            return PolicyReload(None, f"policy file {self._path} is gone; {keeping}")
        try:
            fresh = load_policies(self._path)
        except ConfigError as exc:
            return PolicyReload(None, f"policy edit refused, {keeping}: {exc}")
        if fresh.digest == self._policies.digest:
            return None
        self._policies = fresh
        return PolicyReload(fresh)

    async def watch(self, interval_s: float = 2.0) -> AsyncIterator[PolicyReload]:
        """Yield each reload or refused edit, polling every `interval_s` seconds, forever."""
        while True:
            found = self.poll()
            if found is not None:
                yield found
            await asyncio.sleep(interval_s)
