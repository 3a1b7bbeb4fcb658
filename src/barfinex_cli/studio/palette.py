"""The studio's entries in Textual's command palette (ctrl+p): every screen, stand-down, resume.

The palette is the discoverable way to everything a key does; the two writes open the same
confirmation as `s` and `r` on the Risk screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand

from barfinex_cli.studio.header import SCREEN_KEYS
from barfinex_cli.studio.screens.risk import RiskScreen

if TYPE_CHECKING:
    from barfinex_cli.studio.app import StudioApp


def palette_commands(app: StudioApp) -> Iterator[SystemCommand]:
    """Yield the studio's commands for `app`'s palette."""
    for key, mode, title in SCREEN_KEYS:
        yield SystemCommand(
            f"Show {title}", f"Switch to the {title} screen (key {key})",
            lambda mode=mode: app.action_show(mode),
        )  # fmt: skip
    yield SystemCommand(
        "Inspector: stand down", "Allow no new entries until resumed (asks first)",
        lambda: app.run_worker(_on_risk(app, "stand_down")),
    )  # fmt: skip
    yield SystemCommand(
        "Inspector: resume", "Clear a stand-down (asks first)",
        lambda: app.run_worker(_on_risk(app, "resume")),
    )  # fmt: skip


async def _on_risk(app: StudioApp, which: str) -> None:
    """Show the Risk screen, then ask for the write there."""
    if app.current_mode != "risk":
        await app.switch_mode("risk")
    screen = app.screen
    if isinstance(screen, RiskScreen):
        if which == "stand_down":
            screen.action_stand_down()
        else:
            screen.action_resume()
