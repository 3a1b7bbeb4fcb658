"""The studio's header line: connection state, mode, market clock, wall clock and the screen keys.

It displays what `StudioState` holds and the time the app's clock gives; the app refreshes it on
every change and once a second. A disconnected link reads `disconnected — retrying in Ns` in the
error colour, so a dropped socket is visible at a glance.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from barfinex_cli.studio.state import StudioState

SCREEN_KEYS: tuple[tuple[str, str, str], ...] = (
    ("1", "market", "Market"),
    ("2", "signals", "Signals"),
    ("3", "decisions", "Decisions"),
    ("4", "risk", "Risk"),
    ("5", "capital", "Capital"),
    ("6", "services", "Services"),
)
"""Key, mode name and title of each screen, in key order."""


def link_text(state: StudioState) -> Text:
    """Return the connection state in words, coloured by how healthy it is."""
    link = state.connection
    if link.state == "connected":
        return Text("● connected", style="bold green")
    if link.state == "disconnected":
        wait = f" in {link.retry_in_s:.0f}s" if link.retry_in_s is not None else ""
        return Text(f"● disconnected — retrying{wait}", style="bold red")
    if link.state == "refused":
        return Text("● token refused", style="bold red")
    if link.state == "unreachable":
        return Text("● provider unreachable — retrying", style="bold red")
    return Text("● connecting…", style="bold yellow")


class StudioHeader(Static):
    """One line on top of every screen."""

    DEFAULT_CSS = """
    StudioHeader {
        dock: top;
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    def show(self, state: StudioState, now: datetime, current: str) -> None:
        """Draw the header for `state` at wall time `now`, `current` being the shown screen."""
        line = Text("bfx studio", style="bold")
        line.append("  ")
        line.append_text(link_text(state))
        line.append(f"  {state.mode}", style="bold cyan")
        market = state.market_time.strftime("%Y-%m-%d %H:%M") if state.market_time else "—"
        line.append(f"  market {market}")
        line.append(f"  wall {now.strftime('%H:%M:%S')} UTC")
        line.append("  ")
        for key, mode, title in SCREEN_KEYS:  # the footer names them all; here only the shown one
            if mode == current:
                line.append(f" {key} {title} ", style="reverse bold")
            else:
                line.append(f" {key} ", style="dim")
        self.update(line)
