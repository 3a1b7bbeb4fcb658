"""How screens 2-6 and the token screen look, pinned at 130x40 with fixed data and a fixed clock.

The app runs with its workers off (`connect=False`); `fill` writes one fixed story into its
state the way the data layer would (live events through `apply`, a REST snapshot through
`apply_snapshot`), so a snapshot changes only when the screens' drawing does. Regenerate with
`pytest tests/studio/test_snapshots.py --snapshot-update` and look at the SVGs before committing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from textual.pilot import Pilot
from textual.widgets import DataTable

from barfinex_cli.contracts.advisor import DecisionMade, DecisionRejected
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import (
    AccountReconciled,
    KpiReported,
    StrategyCapital,
    VerdictIssued,
)
from barfinex_cli.contracts.market import ConnectorHealth, IncidentOpened, LastFault
from barfinex_cli.contracts.rest import AppInfo, ConnectorStatus, HealthResponse, SeriesInfo
from barfinex_cli.contracts.types import Payload
from barfinex_cli.studio.app import StudioApp
from barfinex_cli.studio.screens.dialogs import TokenScreen
from barfinex_cli.studio.state import Connection, RoleView, Snapshot, StudioState
from studio.stack import until
from studio.test_app import signal

SIZE = (130, 40)
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
SnapCompare = Callable[..., bool]


def event(payload: Payload, minute: int, ident: str) -> Envelope[Any]:
    made = make_event(payload, source="fixture", ts=T0 + timedelta(minutes=minute))
    return made.model_copy(update={"id": ident, "trace_id": ident})


def app_info(name: str, role: str, status: str = "alive", silent: float = 1.5) -> AppInfo:
    return AppInfo(
        id=f"id-{name}", name=name, role=role, url=f"http://127.0.0.1:80{len(name)}",
        version="0.1.0", started_at=T0, last_seen=T0, status=status, health="ok",
        silent_for_s=silent,
    )  # fmt: skip


def kpi() -> KpiReported:
    return KpiReported(
        account="paper", period="day", period_start=T0.replace(hour=0), period_end=T0,
        trades=7, win_rate=0.571, expectancy=Decimal("3.2"), pnl=Decimal("22.40"),
        pnl_currency="USDT", max_drawdown=0.012, equity=Decimal("10022.40"),
        realised_pnl=Decimal("18.10"), unrealised_pnl=Decimal("4.30"), drawdown=0.008,
        drawdown_limit=0.05, daily_loss=0.0021, daily_loss_limit=0.03,
        exposure=Decimal("2104.00"),
        policies={"stand_down": "ok", "daily_loss": "ok: down 0.21% today of daily_loss_pct 3%",
                  "trades_per_day": "THROTTLE until 2024-01-02T00:00:00+00:00: 7 trades today, "
                                    "at max_trades_per_day 7"},
        strategies={
            "momentum": StrategyCapital(in_positions=Decimal("2104.00"), reserved=Decimal("350"),
                                        utilisation=0.245, decisions=12,
                                        blocked={"stage:quality": 3, "policy:max_exposure": 1}),
            "meanrev": StrategyCapital(in_positions=Decimal(0), reserved=Decimal(0),
                                       utilisation=0.0, decisions=4, blocked={}),
        },
    )  # fmt: skip


def fill(state: StudioState) -> None:
    """Write the fixed story into `state`."""
    health = HealthResponse(status="degraded", version="0.1.0", uptime_s=812.0, clock="market",
                            market_time=T0, replay_done=False,
                            connectors={"ccxt:binance": "degraded", "replay": "ok"})  # fmt: skip
    failing = ConnectorStatus(
        name="ccxt:binance", connector="ccxt:binance", exchange="binance", connected=True,
        lag_ms=120.0, messages_per_s=8.5, reconnects=1, gaps=1, rate_limit_waits=0,
        status="degraded", consecutive_failures=3, unavailable=2, timeouts=1, ws_drops=1,
        gaps_repaired=1, last_errors={
            "unavailable": LastFault(at=T0, error="binance is not available (Service "
                                     "Unavailable) — try again later, or use --replay"),
            "ws_drop": LastFault(at=T0 - timedelta(minutes=5), error="trades BTC/USDT "
                                 "stream failed: cannot reach binance (offline?)"),
        },
    )  # fmt: skip
    series = [SeriesInfo(exchange="synthetic", symbol="BTC/USDT", timeframe=tf, rows=rows,
                         first_ms=1_704_067_200_000, last_ms=1_704_110_400_000)
              for tf, rows in (("1m", 720), ("5m", 144))]  # fmt: skip
    inspector = RoleView("inspector", {
        "health": {"entries_open": True, "stand_down_until": None, "provider_down": False,
                   "bus": "ok", "pending": 0, "verdicts": 9},
        "policies": {"stand_down": "ok"},
        "kpi": kpi().model_dump(mode="json"),
        "positions": [{"symbol": "BTC/USDT", "side": "long", "size": "0.05", "entry": "42080.5",
                       "strategy": "momentum", "stop": "41900", "take_profit": "42400",
                       "protective": [{"role": "stop_loss", "price": "41900", "status": "open"},
                                      {"role": "take_profit", "price": "42400",
                                       "status": "open"}]}],
    })  # fmt: skip
    state.apply_snapshot(
        Snapshot(
            health=health,
            apps=[
                app_info("advisor", "advisor"),
                app_info("inspector", "inspector"),
                app_info("momentum-1", "detector"),
                app_info("old-det", "detector", "lost", 95),
            ],
            connectors=[failing],
            series=series,
            positions=[],
            orders=[],
            paper=True,
            advisor=RoleView("advisor", {"decisions": []}),
            inspector=inspector,
        )
    )
    state.set_connection(Connection("connected", "ws://127.0.0.1:8081/ws"))
    live: list[Envelope[Any]] = [
        event(signal(2.5), 1, "sig-1"),
        event(signal(3.0).model_copy(update={"direction": "short", "symbol": "ETH/USDT"}), 2,
              "sig-2"),
        event(DecisionMade(signal_id="sig-1", exchange="synthetic", symbol="BTC/USDT",
                           side="buy", entry=Decimal("42080.5"), stop=Decimal("41900"),
                           take_profit=Decimal("42400"), size=Decimal("0.05"), conviction=0.68,
                           reasoning="trend and rules agree", regime="trend"), 3, "dec-1"),
        event(DecisionRejected(signal_id="sig-2", stage="quality", reason="data stale by 4 bars",
                               conviction=None), 4, "dec-2"),
        event(VerdictIssued(decision_id="dec-1", verdict="ALLOW", policy="max_exposure",
                            reason="exposure 21% under 50%"), 5, "ver-1"),
        event(AccountReconciled(account="paper", exchange="paper", orders_checked=3,
                                positions_checked=1, balances_checked=1, divergences=0,
                                duration_ms=4.2), 6, "rec-1"),
        event(ConnectorHealth(connector="replay", exchange="synthetic", connected=True,
                              lag_ms=3.0, messages_per_s=41.2, reconnects=0, gaps=0,
                              rate_limit_waits=0), 7, "hl-1"),
        event(IncidentOpened(incident_id="inc-1", exchange="synthetic", symbol="BTC/USDT",
                             timeframe="5m", action="TARGETED_REPAIR", quality_score=71.5,
                             reason="2 holes", opened_at=T0), 8, "inc-1"),
    ]  # fmt: skip
    for item in live:
        state.apply(item)
    state.market_time = T0 + timedelta(minutes=9)


EXPLANATION = {
    "id": "dec-1", "type": "advisor.decision", "signal_id": "sig-1", "symbol": "BTC/USDT",
    "direction": "long", "side": "buy", "entry": "42080.5", "stop": "41900",
    "take_profit": "42400", "size": "0.05", "conviction": 0.68, "regime": "trend",
    "stages": [
        {"stage": s, "outcome": o, "detail": d} for s, o, d in (
            ("context", "passed", "120 candles, spread 0.02%"),
            ("quality", "passed", "quality 0.93 >= 0.60"),
            ("ml", "passed", "rule scorer p=0.61"),
            ("conviction", "passed", "raw 0.64"),
            ("calibration", "passed", "isotonic 0.64 -> 0.68 (trend)"),
            ("llm", "skipped", "not_configured"),
            ("validation", "passed", "reward/risk 1.77"),
            ("intent", "passed", "buy 0.05 @ 42080.5"),
        )
    ],
    "events": [
        {"type": "advisor.conviction.calibrated",
         "payload": {"regime": "trend", "raw": 0.64, "calibrated": 0.68, "method": "isotonic"}},
        {"type": "advisor.llm.skipped", "payload": {"reason": "not_configured", "detail": ""}},
    ],
}  # fmt: skip
"""What the advisor's `/api/v1/decisions/dec-1` answers for the fixed story."""


def advisor_twin() -> Starlette:
    """The gateway's proxy to the advisor, answering the fixed explanation (no network)."""

    async def explain(request: Request) -> JSONResponse:
        if request.path_params["ref"] != "dec-1":
            return JSONResponse({"detail": "no such decision"}, 404)
        return JSONResponse(EXPLANATION)

    return Starlette(routes=[Route("/proxy/advisor/api/v1/decisions/{ref}", explain)])


def studio_app() -> StudioApp:
    app = StudioApp("http://127.0.0.1:8081", "t", connect=False, clock=lambda: T0,
                    transport=httpx.ASGITransport(app=advisor_twin()))  # fmt: skip
    fill(app.state)
    return app


def show(key: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press(key)
        await pilot.pause()

    return run_before


def test_signals_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(studio_app(), terminal_size=SIZE, run_before=show("2"))


def test_decisions_screen(snap_compare: SnapCompare) -> None:
    app = studio_app()

    async def explain_the_decision(pilot: Pilot[None]) -> None:
        await pilot.press("3")
        screen = app.screen
        table = screen.query_one("#decisions", DataTable)
        table.focus()
        await pilot.press("down")  # the decision, below the newer rejection
        await until(lambda: screen.query_one("#stages", DataTable).row_count == 8)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=explain_the_decision)


def test_risk_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(studio_app(), terminal_size=SIZE, run_before=show("4"))


def test_capital_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(studio_app(), terminal_size=SIZE, run_before=show("5"))


def test_services_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(studio_app(), terminal_size=SIZE, run_before=show("6"))


def test_token_screen(snap_compare: SnapCompare) -> None:
    app = studio_app()

    async def refuse(pilot: Pilot[None]) -> None:
        await pilot.press("6")  # a screen that does no IO of its own behind the dialog
        app.push_screen(TokenScreen(app.url, "the provider at http://127.0.0.1:8081 refused "
                                             "the token"))  # fmt: skip
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=refuse)
