"""The studio's headless state: what each live event changes, bounds, versions and the mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from barfinex_cli.contracts.advisor import DecisionMade, DecisionRejected
from barfinex_cli.contracts.apps import AppLost, AppRegistered
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.inspector import VerdictIssued, VerdictPending
from barfinex_cli.contracts.market import CandleClosed, IncidentOpened
from barfinex_cli.contracts.orders import OrderCancelled, OrderState, PositionChanged
from barfinex_cli.contracts.rest import HealthResponse
from barfinex_cli.studio import state as st
from barfinex_cli.studio.state import RoleView, Snapshot, StudioState

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candle(minute: int) -> CandleClosed:
    return CandleClosed(
        exchange="x", symbol="BTC/USDT", timeframe="1m", open_time=T0 + timedelta(minutes=minute),
        open=Decimal(1), high=Decimal(2), low=Decimal(1), close=Decimal(2), volume=Decimal(3),
    )  # fmt: skip


def snapshot(
    clock: str = "wall", paper: bool = True, orders: list[OrderState] | None = None
) -> Snapshot:
    health = HealthResponse(status="ok", version="0", uptime_s=1.0, clock=clock)
    return Snapshot(health, [], [], [], [], orders or [], paper,
                    RoleView(None, problem="no advisor"),
                    RoleView(None, problem="no inspector"))  # fmt: skip


def an_order(cid: str, status: str) -> OrderState:
    return OrderState.model_validate({
        "client_order_id": cid, "account": "paper", "exchange": "paper", "symbol": "BTC/USDT",
        "side": "sell", "type": "limit", "amount": "1", "price": "110", "status": status,
    })  # fmt: skip


def test_candles_are_kept_per_series_bounded_and_move_the_market_clock() -> None:
    state = StudioState()
    for minute in range(st.MAX_CANDLES + 10):
        assert state.apply(make_event(candle(minute), source="t")) == "candles"
    held = state.candles[("x", "BTC/USDT", "1m")]
    assert len(held) == st.MAX_CANDLES
    assert held[0].open_time == T0 + timedelta(minutes=10)
    assert state.market_time == T0 + timedelta(minutes=st.MAX_CANDLES + 10)
    assert state.versions["candles"] == st.MAX_CANDLES + 10


def test_a_verdict_is_found_by_its_decision_and_outcomes_become_decision_rows() -> None:
    state = StudioState()
    made = make_event(
        DecisionMade(signal_id="s1", exchange="x", symbol="BTC/USDT", side="buy",
                     entry=Decimal(100), stop=Decimal(90), take_profit=Decimal(120),
                     size=Decimal("0.5"), conviction=0.7, reasoning="r", regime="trend"),
        source="advisor",
    )  # fmt: skip
    rejected = make_event(
        DecisionRejected(signal_id="s2", stage="quality", reason="stale data"), source="advisor"
    )
    state.apply(made)
    state.apply(rejected)
    state.apply(make_event(VerdictIssued(decision_id=made.id, verdict="ALLOW", policy="caps",
                                         reason="within limits"), source="inspector"))  # fmt: skip
    assert list(state.decisions) == [made.id, rejected.id]
    assert state.decisions[made.id]["side"] == "buy"
    assert state.decisions[made.id]["entry"] == "100"
    assert state.decisions[rejected.id]["stage"] == "quality"
    assert state.verdict_of[made.id].verdict == "ALLOW"


def test_a_pending_notice_is_no_verdict_and_gives_way_to_the_verdict_that_follows() -> None:
    state = StudioState()
    notice = VerdictPending(decision_id="d1", reason="provider unreachable; no order placed")
    state.apply(make_event(notice, source="inspector"))
    assert "d1" not in state.verdict_of and list(state.verdicts) == []
    assert state.pending_of["d1"].reason.startswith("provider unreachable")
    verdict = VerdictIssued(decision_id="d1", verdict="BLOCK", policy="spread", reason="wide")
    state.apply(make_event(verdict, source="inspector"))
    assert state.verdict_of["d1"].verdict == "BLOCK" and "d1" not in state.pending_of
    assert len(state.verdicts) == 1


def test_positions_close_at_size_zero_and_apps_follow_the_registry_events() -> None:
    state = StudioState()
    open_ = PositionChanged(account="paper", exchange="paper", symbol="BTC/USDT", side="long",
                            size=Decimal(1), unrealised_pnl=Decimal(5), realised_pnl=Decimal(0),
                            pnl_currency="USDT")  # fmt: skip
    state.apply(make_event(open_, source="p"))
    assert ("paper", "BTC/USDT") in state.positions
    closed = open_.model_copy(update={"size": Decimal(0), "side": "flat"})
    state.apply(make_event(closed, source="p"))
    assert state.positions == {}
    reg = AppRegistered(app_id="a1", name="advisor", role="advisor", last_seen=T0, version="1",
                        started_at=T0)  # fmt: skip
    state.apply(make_event(reg, source="registry"))
    assert [a.name for a in state.alive("advisor")] == ["advisor"]
    assert "advisor" not in state.missing_roles()
    lost = AppLost(app_id="a1", name="advisor", role="advisor", last_seen=T0, silent_for_s=31.0)
    state.apply(make_event(lost, source="registry"))
    assert state.alive("advisor") == [] and state.apps[0].silent_for_s == 31.0
    assert "advisor" in state.missing_roles()


def test_an_incident_sets_the_quality_of_its_series() -> None:
    state = StudioState()
    incident = IncidentOpened(incident_id="i1", exchange="x", symbol="BTC/USDT", timeframe="1m",
                              action="TARGETED_REPAIR", quality_score=62.5, reason="holes",
                              opened_at=T0)  # fmt: skip
    assert state.apply(make_event(incident, source="provider")) == "quality"
    assert state.quality[("x", "BTC/USDT", "1m")] == (62.5, "open")


def test_the_mode_is_replay_on_a_market_clock_else_paper_or_live() -> None:
    state = StudioState()
    assert state.mode == "?"
    state.apply_snapshot(snapshot("market"))
    assert state.mode == "replay"
    state.apply_snapshot(snapshot("wall", paper=True))
    assert state.mode == "paper"
    state.apply_snapshot(snapshot("wall", paper=False))
    assert state.mode == "live"


async def test_a_growing_log_appends_and_trims_rows_and_anything_else_rebuilds() -> None:
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from barfinex_cli.studio.screens.base import sync_rows, table

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield table("t", "n")

    def rows(*keys: str) -> list[tuple[str, tuple[object, ...]]]:
        return [(k, (k.upper(),)) for k in keys]

    app = One()
    async with app.run_test():
        grid = app.query_one(DataTable)

        def row_of(key: str) -> object:
            return next(row for k, row in grid.rows.items() if k.value == key)

        sync_rows(grid, rows("a", "b", "c"))
        kept = row_of("c")
        sync_rows(grid, rows("b", "c", "d", "e"))  # a left the window, d and e arrived
        assert [r.key.value for r in grid.ordered_rows] == ["b", "c", "d", "e"]
        assert [grid.get_row_at(i)[0] for i in range(grid.row_count)] == ["B", "C", "D", "E"]
        assert row_of("c") is kept  # appended and trimmed, not rebuilt
        sync_rows(grid, rows("e", "c"))  # reordered: rebuilt
        assert [r.key.value for r in grid.ordered_rows] == ["e", "c"]
        assert row_of("c") is not kept
        sync_rows(grid, [])
        assert grid.row_count == 0


def test_orders_held_are_bounded_but_an_open_one_outlives_newer_done_ones_until_a_poll_lacks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(st, "MAX_ORDERS", 3)
    state = StudioState()
    polled = [an_order("tp", "open"), *(an_order(f"d{i}", "filled") for i in range(3))]
    state.apply_snapshot(snapshot(orders=polled))
    assert list(state.orders) == ["tp", "d1", "d2"]  # the oldest done one went, not the open one
    cancelled = OrderCancelled(order=an_order("d3", "cancelled"), reason="user", by="user")
    assert state.apply(make_event(cancelled, source="t")) == "orders"
    assert list(state.orders) == ["tp", "d2", "d3"]
    # the next poll holds every open order: "tp" closed since, its event missed, out of the window
    state.apply_snapshot(snapshot(orders=[an_order("d3", "cancelled"), an_order("d4", "filled")]))
    assert list(state.orders) == ["d2", "d3", "d4"]
