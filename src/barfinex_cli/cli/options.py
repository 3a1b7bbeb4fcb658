"""Options every role command shares, declared once, and the one way a role command starts.

`bfx detector run`, `bfx advisor run` and `bfx inspector run` take the same provider URL,
registry and clock options; their help and types live here so the commands cannot drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:
    from barfinex_cli.runtime.settings import Settings

ProviderOpt = Annotated[
    str | None, typer.Option("--provider", help="Provider URL (default: settings).")
]
NoRegisterOpt = Annotated[
    bool, typer.Option("--no-register", help="Do not join the provider's app registry.")
]
ClockOpt = Annotated[
    str | None,
    typer.Option(help="auto (follow the provider's), wall or market [default: auto]."),
]


def role_settings(ctx: typer.Context) -> Settings:
    """Return the settings of a role command, with its logging set up (stderr, rich or JSON)."""
    from barfinex_cli.runtime.logs import setup_logging

    settings = state_of(ctx).settings()
    setup_logging(settings.log_level, json_lines=settings.log_json or None)
    return settings
