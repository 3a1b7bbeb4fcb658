"""What the root callback hands to every command: where settings come from, loaded on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from barfinex_cli.runtime.settings import Settings


@dataclass
class State:
    """The global options; `settings()` reads and validates them once."""

    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            from barfinex_cli.runtime.settings import load_settings

            self._settings = load_settings(self.config, **self.overrides)
        return self._settings


def state_of(ctx: typer.Context) -> State:
    """Return the `State` of this invocation (a default one when a command runs alone)."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj
