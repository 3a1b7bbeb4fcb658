"""Screen 6, Services: the app registry, the connectors and the quality of each candle series.

Apps come from the provider's registry (`/api/v1/apps`, then live `registry.*` events): role,
alive or lost, health, heartbeat age, version, where it serves. Connectors from
`/api/v1/connectors` and live `provider.health`: state (ok or degraded), connected, lag,
messages per second, reconnects, gaps, the exchange faults met and the latest error. Data
quality per series from `/api/v1/series` (rows, first and last candle) and the provider's
incidents (`provider.incident.*` quality score and state) and gaps seen live.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from barfinex_cli.contracts.market import ConnectorHealth
from barfinex_cli.studio.screens.base import StudioScreen, matches, table
from barfinex_cli.studio.state import StudioState

LAST_ERROR_WIDTH = 60
"""Characters of a connector's latest error shown (`bfx provider status` prints it whole)."""


def _ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


class ServicesScreen(StudioScreen):
    """Which roles run and how well; connectors; data quality."""

    DEFAULT_CSS = """
    ServicesScreen .caption { text-style: bold; padding: 0 1; }
    ServicesScreen #roles-line { padding: 0 1; }
    ServicesScreen #apps { height: auto; max-height: 12; }
    ServicesScreen #connectors { height: auto; max-height: 8; }
    ServicesScreen #series { height: 1fr; }
    """
    MODE = "services"
    SECTIONS = ("apps", "quality", "health")
    ROLES = ("detector", "advisor", "inspector")

    def compose_body(self) -> ComposeResult:
        yield Static("", id="roles-line")
        yield Static("Apps", classes="caption")
        yield table("apps", "name", "role", "status", "health", "heartbeat age", "version", "url")
        yield Static("Connectors", classes="caption")
        yield table(
            "connectors",
            "connector",
            "exchange",
            "state",
            "connected",
            "lag ms",
            "msg/s",
            "reconnects",
            "gaps",
            "faults",
            "last error",
            cursor="none",
        )
        yield Static("Data quality per series", classes="caption")
        yield table(
            "series",
            "exchange",
            "symbol",
            "tf",
            "rows",
            "first",
            "last",
            "quality",
            "incident",
            "gaps",
        )

    def missing_hint(self, missing: list[str]) -> str:
        return "start them with `bfx up`, or each with `bfx <role> run`"

    def draw(self, state: StudioState) -> None:
        health = state.health
        line = Text()
        if health is not None:
            line.append(f"provider {health.version} · {health.status} · up {health.uptime_s:.0f}s"
                        f" · clock {health.clock} · mode {state.mode}")  # fmt: skip
            if health.replay_done:
                line.append(" · replay finished")
        line.append(f" · live events {state.events_seen}, malformed skipped {state.skipped}")
        self.query_one("#roles-line", Static).update(line)
        apps = self.query_one("#apps", DataTable)
        apps.clear()
        for app in state.apps:
            cells = (app.name, app.role, app.status, app.health, f"{app.silent_for_s:.1f}s",
                     app.version or "—", app.url or "—")  # fmt: skip
            if matches(self.filter_text, cells):
                alive = app.status == "alive"
                apps.add_row(*cells[:2], Text(app.status, style="green" if alive else "bold red"),
                             Text(app.health, style="green" if app.health == "ok" else "yellow"),
                             *cells[4:])  # fmt: skip
        connectors = self.query_one("#connectors", DataTable)
        connectors.clear()
        for name, c in sorted(state.connectors.items()):
            connectors.add_row(
                name, c.exchange, Text(c.status, style="green" if c.status == "ok" else "yellow"),
                Text("yes", style="green") if c.connected else Text("NO", "red"),
                f"{c.lag_ms:.0f}", f"{c.messages_per_s:.1f}", str(c.reconnects), str(c.gaps),
                _faults(c), _last_error(c),
            )  # fmt: skip
        series = self.query_one("#series", DataTable)
        series.clear()
        for s in state.series:
            key = (s.exchange, s.symbol, s.timeframe)
            score, incident = state.quality.get(key, (None, "none"))
            row = (s.exchange, s.symbol, s.timeframe, str(s.rows), _ms(s.first_ms),
                     _ms(s.last_ms), "—" if score is None else f"{score:.0f}", incident,
                     str(state.gaps.get(key, 0)))  # fmt: skip
            if matches(self.filter_text, row):
                series.add_row(*row)


def _faults(c: ConnectorHealth) -> str:
    """Return the exchange faults a connector met, e.g. `5xx 2 · timeout 1`, or a dash."""
    counts = (("5xx", c.unavailable), ("timeout", c.timeouts), ("unreachable", c.unreachable),
              ("ws drop", c.ws_drops), ("lost answer", c.lost_order_answers))  # fmt: skip
    return " · ".join(f"{label} {n}" for label, n in counts if n) or "—"


def _last_error(c: ConnectorHealth) -> str:
    """Return the latest error of any kind with its time of day, shortened, or a dash."""
    if not c.last_errors:
        return "—"
    last = max(c.last_errors.values(), key=lambda fault: fault.at)
    text = f"{last.at:%H:%M:%S} {last.error}"
    return text if len(text) <= LAST_ERROR_WIDTH else text[: LAST_ERROR_WIDTH - 1] + "…"
