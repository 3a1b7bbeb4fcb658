"""Screen 4, Risk: the inspector's KPIs, open positions with their guards, policies and verdicts.

Drawn from the inspector's `/api/v1/status` (through the provider's proxy: health, each policy's
state, KPIs, positions with their protective orders), the provider's positions (mark price and
unrealised P&L), and the live `inspector.verdict`, `inspector.kpi` and `inspector.reconciled`
events. The only writes of the studio live here: `s` stands the inspector down (no new entries
until resumed) and `r` resumes, each behind a confirmation.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from barfinex_cli.errors import BfxError
from barfinex_cli.studio.screens.base import Row, StudioScreen, matches, sync_rows, table
from barfinex_cli.studio.state import StudioState

BAR = 30


def bar(fraction: float, width: int = BAR) -> str:
    """Return a bar of `width` cells filled to `fraction` (clamped to 0..1)."""
    filled = round(max(0.0, min(fraction, 1.0)) * width)
    return "█" * filled + "░" * (width - filled)


def _money(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _against(text: Text, label: str, value: float, limit: float | None) -> None:
    """Append `label`, a bar of how much of `limit` `value` uses, and both figures."""
    used = value / limit if limit else 0.0
    style = "green" if used < 0.5 else "yellow" if used < 0.8 else "bold red"
    text.append(label)
    text.append(bar(used), style=style)
    limit_text = f"{limit:.1%}" if limit is not None else "no limit"
    text.append(f" {value:.2%} of {limit_text}")


class RiskScreen(StudioScreen):
    """Where the account stands and what the inspector thinks of it."""

    DEFAULT_CSS = """
    RiskScreen #inspector-line { padding: 0 1; }
    RiskScreen #top { height: auto; max-height: 12; }
    RiskScreen #kpi { width: 1fr; padding: 0 1; height: auto; }
    RiskScreen #policy-box { width: 1fr; height: auto; }
    RiskScreen #policies { height: auto; max-height: 10; }
    RiskScreen #positions { height: 1fr; }
    RiskScreen #verdicts { height: 1fr; }
    RiskScreen .caption { text-style: bold; padding: 0 1; }
    """
    MODE = "risk"
    SECTIONS = ("inspector", "kpi", "positions", "verdicts")
    ROLES = ("inspector",)
    BINDINGS = [
        Binding("s", "stand_down", "Stand down"),
        Binding("r", "resume", "Resume"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("", id="inspector-line")
        with Horizontal(id="top"):
            yield Static("", id="kpi")
            with Vertical(id="policy-box"):
                yield Static("Policies", classes="caption")
                yield table("policies", "policy", "state", cursor="none")
        yield Static("Open positions", classes="caption")
        yield table(
            "positions",
            "symbol",
            "side",
            "size",
            "entry",
            "mark",
            "unrealised",
            "stop",
            "take-profit",
            "guards",
            "strategy",
        )
        yield Static("Recent verdicts", classes="caption")
        yield table("verdicts", "time", "decision", "verdict", "policy", "reason")

    def missing_hint(self, missing: list[str]) -> str:
        return "no inspector is running: no KPIs, policies or verdicts (`bfx inspector run`)"

    def draw(self, state: StudioState) -> None:
        self._draw_line(state)
        self._draw_kpi(state)
        policies = self.query_one("#policies", DataTable)
        policies.clear()
        states: dict[str, str] = dict(state.inspector.data.get("policies") or {})
        if state.kpi is not None:
            states.update(state.kpi.policies)
        for name, value in sorted(states.items()):
            style = "green" if value == "ok" or value.startswith("ok:") else "bold red"
            policies.add_row(name, Text(value, style=style))
        self._draw_positions(state)
        verdicts = self.query_one("#verdicts", DataTable)
        rows: list[Row] = []
        for event in state.verdicts:  # oldest first: the log grows at the end
            v = event.payload
            cells = (event.ts.strftime("%m-%d %H:%M:%S"), v.decision_id[-12:], v.verdict,
                     v.policy, v.reason)  # fmt: skip
            if matches(self.filter_text, cells):
                style = "green" if v.verdict == "ALLOW" else "bold red"
                rows.append((event.id, (*cells[:2], Text(v.verdict, style=style), *cells[3:])))
        sync_rows(verdicts, rows)
        if rows:
            verdicts.move_cursor(row=verdicts.row_count - 1)

    def _draw_line(self, state: StudioState) -> None:
        view = state.inspector
        line = self.query_one("#inspector-line", Static)
        if view.problem:
            line.update(Text(f"inspector: {view.problem}", style="yellow"))
            return
        health: dict[str, Any] = view.data.get("health") or {}
        text = Text(f"inspector {view.app}: ")
        entries = health.get("entries_open")
        text.append("entries open" if entries else "entries CLOSED",
                    style="green" if entries else "bold red")  # fmt: skip
        until = health.get("stand_down_until")
        text.append(f" · stand-down {'until ' + until if until else 'none'}")
        text.append(f" · provider {'DOWN' if health.get('provider_down') else 'ok'}")
        text.append(f" · bus {health.get('bus', '?')} · pending {health.get('pending', 0)}")
        text.append(f" · verdicts {health.get('verdicts', 0)}")
        rec = state.reconciled
        if rec is not None:
            clean = rec.divergences == 0
            text.append(" · reconciled ")
            text.append("clean" if clean else f"{rec.divergences} divergences",
                        style="green" if clean else "bold red")  # fmt: skip
            text.append(f" ({rec.orders_checked} orders, {rec.positions_checked} positions)")
        else:
            text.append(" · reconciled: none seen yet", style="dim")
        line.update(text)

    def _draw_kpi(self, state: StudioState) -> None:
        panel = self.query_one("#kpi", Static)
        kpi = state.kpi
        if kpi is None:
            panel.update(Text("No KPIs: the inspector has not reported any.", style="dim"))
            return
        text = Text()
        text.append(
            f"account {kpi.account} · {kpi.period} from {kpi.period_start:%Y-%m-%d %H:%M}\n"
        )
        text.append(f"equity      {_money(kpi.equity)} {kpi.pnl_currency}\n")
        text.append(f"P&L         {_money(kpi.pnl)}  realised {_money(kpi.realised_pnl)}"
                    f"  unrealised {_money(kpi.unrealised_pnl)}\n")  # fmt: skip
        text.append(f"trades      {kpi.trades} · win rate {kpi.win_rate:.0%}"
                    f" · expectancy {_money(kpi.expectancy)}\n")  # fmt: skip
        text.append(f"exposure    {_money(kpi.exposure)}\n")
        drawdown = kpi.drawdown if kpi.drawdown is not None else kpi.max_drawdown
        _against(text, "drawdown    ", drawdown, kpi.drawdown_limit)
        if kpi.daily_loss is not None or kpi.daily_loss_limit is not None:
            text.append("\n")
            _against(text, "daily loss  ", kpi.daily_loss or 0.0, kpi.daily_loss_limit)
        panel.update(text)

    def _draw_positions(self, state: StudioState) -> None:
        table = self.query_one("#positions", DataTable)
        table.clear()
        guarded = {str(p.get("symbol")): p for p in state.inspector.data.get("positions") or []}
        symbols = sorted({*guarded, *(sym for _, sym in state.positions)})
        marks = {sym: p for (_, sym), p in state.positions.items()}
        for symbol in symbols:
            g, p = guarded.get(symbol, {}), marks.get(symbol)
            guards = ", ".join(
                f"{x.get('role')} {x.get('price')} {x.get('status')}"
                for x in g.get("protective", [])
            )
            pnl = p.unrealised_pnl if p is not None else None
            cells = (
                symbol, str(g.get("side") or (p.side if p else "—")),
                str(g.get("size") or (p.size if p else "—")),
                str(g.get("entry") or (p.entry_price if p else "—")),
                "—" if p is None or p.mark_price is None else str(p.mark_price),
                _money(pnl), str(g.get("stop") or "—"), str(g.get("take_profit") or "—"),
                guards or ("none" if g else "— (inspector does not manage it)"),
                str(g.get("strategy") or "—"),
            )  # fmt: skip
            if not matches(self.filter_text, cells):
                continue
            colour = "green" if pnl is not None and pnl >= 0 else "red"
            table.add_row(*cells[:5], Text(cells[5], style=colour), *cells[6:])

    # --- the two writes -------------------------------------------------------------------------

    def action_stand_down(self) -> None:
        """Ask, then stand the inspector down."""
        app = self.state.inspector.app
        if app is None:
            self.notify("no inspector is running to stand down", severity="warning")
            return
        self.studio.confirm_then(
            f"Stand {app} down? It allows no new entries until resumed; open positions stay "
            "guarded.", "Stand down", lambda: self.write("stand_down", app),
        )  # fmt: skip

    def action_resume(self) -> None:
        """Ask, then resume the inspector."""
        app = self.state.inspector.app
        if app is None:
            self.notify("no inspector is running to resume", severity="warning")
            return
        self.studio.confirm_then(
            f"Resume {app}? New entries are allowed again.", "Resume",
            lambda: self.write("resume", app),
        )  # fmt: skip

    @work(group="risk-write")
    async def write(self, which: str, app: str) -> None:
        """Send a confirmed stand-down or resume, then refresh."""
        roles = self.studio.roles
        try:
            if which == "stand_down":
                await roles.stand_down(app)
            else:
                await roles.resume(app)
        except BfxError as exc:
            self.notify(f"{which.replace('_', '-')} failed: {exc}", severity="error")
            return
        self.notify(f"{app}: {'stood down' if which == 'stand_down' else 'resumed'}")
        self.studio.refresh_now()
