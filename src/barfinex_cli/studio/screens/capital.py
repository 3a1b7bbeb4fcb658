"""Screen 5, Capital: how each strategy uses the account, from the inspector's KPIs.

Per strategy (`inspector.kpi` → `strategies`): capital in positions, capital reserved by open
entry orders, utilisation of equity as a bar, decisions seen, and how many were suppressed and
by what (an advisor stage or an inspector policy). Bars on top for the eye, a table beneath for
the numbers.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from barfinex_cli.studio.screens.base import StudioScreen, matches, table
from barfinex_cli.studio.screens.risk import bar
from barfinex_cli.studio.state import StudioState


class CapitalScreen(StudioScreen):
    """Utilisation, reservation and suppression per strategy."""

    DEFAULT_CSS = """
    CapitalScreen #bars { height: auto; padding: 1 1; }
    CapitalScreen #capital { height: 1fr; }
    """
    MODE = "capital"
    SECTIONS = ("kpi", "inspector")
    ROLES = ("inspector",)

    def compose_body(self) -> ComposeResult:
        yield Static("", id="bars")
        yield table(
            "capital",
            "strategy",
            "in positions",
            "reserved",
            "utilisation",
            "decisions",
            "suppressed",
            "suppressed by",
        )

    def missing_hint(self, missing: list[str]) -> str:
        return "capital per strategy comes from the inspector's KPIs (`bfx inspector run`)"

    def draw(self, state: StudioState) -> None:
        table = self.query_one("#capital", DataTable)
        table.clear()
        bars = self.query_one("#bars", Static)
        kpi = state.kpi
        if kpi is None or not kpi.strategies:
            why = "the inspector has reported no KPIs" if kpi is None else "no strategy traded yet"
            bars.update(Text(f"No capital figures: {why}.", style="dim"))
            return
        text = Text()
        equity = f"{kpi.equity:,.2f} {kpi.pnl_currency}" if kpi.equity is not None else "unknown"
        text.append(f"equity {equity} — utilisation of equity, and share of decisions "
                    "suppressed, per strategy\n", style="bold")  # fmt: skip
        width = max(len(n) for n in kpi.strategies)
        for name, cap in sorted(kpi.strategies.items()):
            if not matches(self.filter_text, (name,)):
                continue
            style = (
                "green" if cap.utilisation < 0.5 else "yellow" if cap.utilisation < 0.8 else "red"
            )
            text.append(f"{name:<{width}} ")
            text.append(bar(cap.utilisation), style=style)
            text.append(f" {cap.utilisation:6.1%} used")
            blocked = sum(cap.blocked.values())
            # stage blocks stopped signals before a decision; policy blocks stopped decisions
            tried = cap.decisions + sum(v for k, v in cap.blocked.items() if k.startswith("stage:"))
            share = blocked / tried if tried else 0.0
            text.append("   suppressed ")
            text.append(bar(share, 20), style="magenta")
            text.append(f" {share:6.1%}  reserved {cap.reserved:,.2f}\n")
            by = ", ".join(f"{k} {v}" for k, v in sorted(cap.blocked.items(), key=lambda i: -i[1]))
            table.add_row(
                name, f"{cap.in_positions:,.2f}", f"{cap.reserved:,.2f}",
                f"{cap.utilisation:.1%}", str(cap.decisions), str(blocked), by or "—",
            )  # fmt: skip
        text.rstrip()
        bars.update(text)
