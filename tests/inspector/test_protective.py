"""Protective orders as planned and trailed: pure, no IO."""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.inspector.audit import audit, slippage_bps
from barfinex_cli.inspector.protective import plan, trail
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

LONG = PositionRecord(
    symbol="BTC/USDT", side="long", size=Decimal(2), entry=Decimal(100), opened_ms=0,
    decision_id="d", stop=Decimal(98), take_profit=Decimal(104),
)  # fmt: skip


def test_a_long_is_guarded_by_a_reduce_only_sell_stop_and_limit_of_its_size() -> None:
    (k1, stop), (k2, take) = plan(LONG, 1)
    assert (k1, stop.type, stop.side, stop.stop_price, stop.amount) == (
        "stop_loss", "stop_market", "sell", Decimal(98), Decimal(2)
    )  # fmt: skip
    assert (k2, take.type, take.price, take.reduce_only) == (
        "take_profit", "limit", Decimal(104), True
    )  # fmt: skip


def test_a_trailing_stop_only_moves_in_the_positions_favour() -> None:
    up = trail(LONG, Decimal(110), trailing_pct=5, breakeven_at_r=None, initial_stop=None)
    assert up is not None and up.price == Decimal("104.5") and up.previous == Decimal(98)
    down = trail(LONG, Decimal(99), trailing_pct=5, breakeven_at_r=None, initial_stop=None)
    assert down is None


def test_the_stop_moves_to_break_even_once_price_went_the_configured_risks() -> None:
    early = trail(LONG, Decimal(101), trailing_pct=None, breakeven_at_r=1, initial_stop=Decimal(98))
    assert early is None
    move = trail(LONG, Decimal(102), trailing_pct=None, breakeven_at_r=1, initial_stop=Decimal(98))
    assert move is not None and move.price == Decimal(100) and move.reason == "break-even"


def test_the_fill_audit_reports_slippage_against_the_intended_price_for_either_side() -> None:
    assert slippage_bps("buy", Decimal(100), Decimal("100.01")) == 1.0
    assert slippage_bps("sell", Decimal(100), Decimal("99.99")) == 1.0
    order = OrderRecord(
        client_order_id="i-d-e", decision_id="d", role="entry", symbol="BTC/USDT", side="buy",
        type="market", amount=Decimal(2), status="cancelled", filled=Decimal(1),
        average_price=Decimal("100.02"), fees=Decimal("0.05"), partials=1,
        intended_price=Decimal(100), placed_ms=1_000,
    )  # fmt: skip
    found = audit(order, decided_ms=900, filled_ms=1_250, fee_currency="USDT")
    assert found is not None
    assert (found.slippage_bps, found.fill_rate, found.partials, found.latency_ms) == (
        2.0, 0.5, 1, 350.0
    )  # fmt: skip
