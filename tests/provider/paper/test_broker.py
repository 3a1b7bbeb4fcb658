"""The paper broker fills each order type at the price docs/paper.md promises, to the last digit.

Every scenario drives a real `PaperBroker` with crafted candles, trades and books and records the
events it emits; prices, fees and PnL are compared as exact Decimals.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfinex_cli.contracts.codec import decode, encode
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.orders import (
    EVENTS,
    BalanceUpdated,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSide,
    OrderType,
    PositionChanged,
)
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import ConfigError, NotFound, TransientError, UsageError
from barfinex_cli.provider.connectors.base import Broker, OrderRequest
from barfinex_cli.provider.paper.broker import PaperBroker
from barfinex_cli.store.broker import BrokerStore
from barfinex_cli.store.market import CandleRow, TradeRow

SYM = "BTC/USDT"
T0 = 28_333_333 * 60_000  # a minute boundary in November 2023
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
D = Decimal
SIDES: tuple[OrderSide, ...] = ("buy", "sell")


class Recorder:
    """An emit callback that keeps every event (and its payload), in order."""

    def __init__(self) -> None:
        self.events: list[Payload] = []
        self.envelopes: list[Envelope[Any]] = []

    async def __call__(self, event: Envelope[Any]) -> None:
        self.envelopes.append(event)
        self.events.append(event.payload)

    def types(self, since: int = 0) -> list[str]:
        return [p.event_type.split(".", 1)[1] for p in self.events[since:]]

    def fills(self) -> list[OrderPartiallyFilled | OrderFilled]:
        return [p for p in self.events if isinstance(p, OrderPartiallyFilled | OrderFilled)]

    def last(self, kind: type[Payload]) -> Payload:
        return [p for p in self.events if isinstance(p, kind)][-1]


def paper(**options: object) -> tuple[PaperBroker, Recorder]:
    recorder = Recorder()
    return PaperBroker(recorder, clock=lambda: NOW, **options), recorder  # type: ignore[arg-type]


async def candle(
    broker: PaperBroker,
    i: int,
    o: float,
    h: float,
    low: float,
    c: float,
    volume: float = 1000.0,
    timeframe: str = "1m",
) -> None:
    row = CandleRow(T0 + i * 60_000, o, h, low, c, volume)
    await broker.on_candle(SYM, timeframe, row, T0 + (i + 1) * 60_000)


async def close_at(broker: PaperBroker, i: int, price: float, volume: float = 1000.0) -> None:
    await candle(broker, i, price, price, price, price, volume)


def order(
    cid: str,
    side: OrderSide,
    type_: OrderType,
    amount: str,
    price: str | None = None,
    stop: str | None = None,
    *,
    reduce_only: bool = False,
    symbol: str = SYM,
    account: str = "paper",
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        account=account,
        symbol=symbol,
        side=side,
        type=type_,
        amount=D(amount),
        price=None if price is None else D(price),
        stop_price=None if stop is None else D(stop),
        reduce_only=reduce_only,
    )


def minute(i: int) -> datetime:
    return datetime.fromtimestamp((T0 + i * 60_000) / 1000, UTC)


async def test_paper_broker_implements_the_broker_protocol() -> None:
    broker: Broker = paper()[0]  # mypy checks the structural match
    assert broker.name == "paper" and await broker.orders() == []
    [balance] = await broker.balances()
    assert balance.balances["USDT"].free == D(10_000) and await broker.positions() == []


# -- market orders ----------------------------------------------------------------------------


async def test_market_buy_fills_at_last_close_plus_slippage_as_taker() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    state = await broker.place(order("m1", "buy", "market", "1"))
    assert rec.types() == ["submitted", "accepted", "filled", "changed", "balance"]
    fill = rec.fills()[0].fill
    assert (fill.price, fill.amount, fill.fee, fill.liquidity) == (
        D("100.01"),
        D(1),
        D("0.050005"),
        "taker",
    )
    assert fill.fee_currency == "USDT" and fill.time == NOW
    assert state.filled == 1 and state.average_price == D("100.01")
    assert state.order_id == "paper-1"
    position = rec.last(PositionChanged)
    assert isinstance(position, PositionChanged)
    assert (position.side, position.size, position.entry_price) == ("long", D(1), D("100.01"))
    assert position.unrealised_pnl == D("-0.01")
    balance = rec.last(BalanceUpdated)
    assert isinstance(balance, BalanceUpdated)
    usdt = balance.balances["USDT"]
    assert (usdt.total, usdt.used, usdt.free) == (D("9999.949995"), D("100.01"), D("9899.939995"))


async def test_market_sell_fills_below_last_by_slippage_and_opens_a_short() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("m1", "sell", "market", "2"))
    fill = rec.fills()[0].fill
    assert (fill.price, fill.fee) == (D("99.99"), D("0.09999"))
    [position] = await broker.positions()
    assert (position.side, position.size, position.entry_price) == ("short", D(2), D("99.99"))
    assert position.unrealised_pnl == D("-0.02")


async def test_market_order_walks_the_book_with_slippage_on_each_level() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    broker.on_book(SYM, bids=[(D(99), D(5))], asks=[(D(100), D(1)), (D(101), D(2))])
    state = await broker.place(order("m1", "buy", "market", "2"))
    assert rec.types() == [
        "submitted",
        "accepted",
        "partially_filled",
        "filled",
        "changed",
        "balance",
    ]
    fills = [f.fill for f in rec.fills()]
    assert [(f.price, f.amount, f.fee) for f in fills] == [
        (D("100.01"), D(1), D("0.050005")),
        (D("101.0101"), D(1), D("0.05050505")),
    ]
    assert state.average_price == D("100.51005")
    await broker.place(order("m2", "buy", "market", "1"))  # the book keeps what was left
    assert rec.fills()[-1].fill.price == D("101.0101")


async def test_market_order_beyond_the_volume_cap_fills_the_rest_at_next_open() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0, volume=10.0)
    state = await broker.place(order("m1", "buy", "market", "1.5"))
    assert state.filled == 1 and broker.order_status("m1") == "open"
    await candle(broker, 1, 102.0, 103.0, 101.0, 102.5, volume=10.0)
    final = rec.fills()[-1]
    assert isinstance(final, OrderFilled)
    assert (final.fill.price, final.fill.amount) == (D("102.0102"), D("0.5"))
    assert final.fill.time == minute(2)
    assert final.order.average_price == D("100.67673333")


async def test_amounts_are_rounded_down_to_the_step_and_the_cap_never_exceeded() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0, volume=0.333333335)
    await broker.place(order("m1", "buy", "market", "0.123456789"))
    accepted = rec.events[1]
    assert isinstance(accepted, OrderAccepted) and accepted.order.amount == D("0.12345678")
    assert rec.fills()[0].fill.amount == D("0.03333333")


async def test_trade_price_drives_market_orders_when_no_candle_has_closed() -> None:
    broker, rec = paper()
    broker.on_trade(SYM, TradeRow(T0, "t1", 200.5, 0.1, "buy"))
    await broker.place(order("m1", "buy", "market", "3"))
    assert [(f.fill.price, f.fill.amount) for f in rec.fills()] == [(D("200.52005"), D(3))]


async def test_market_order_that_empties_a_book_rests_until_the_next_candle() -> None:
    broker, rec = paper()
    broker.on_book(SYM, bids=[], asks=[(D(100), D(1))])
    state = await broker.place(order("m1", "buy", "market", "3"))
    assert (state.filled, broker.order_status("m1")) == (D(1), "open")
    [balance] = await broker.balances()
    assert balance.balances["USDT"].used == D("300.150012")  # 100.01 + 2 x 100.01 x 1.0006
    await candle(broker, 0, 101.0, 101.0, 101.0, 101.0, volume=1000.0)
    assert rec.fills()[-1].fill.price == D("101.0101") and broker.order_status("m1") == "filled"


async def test_book_older_than_the_last_closed_candle_is_not_used() -> None:
    broker, rec = paper()
    broker.on_book(SYM, bids=[(D(99), D(5))], asks=[(D(100), D(5))])
    await close_at(broker, 0, 105.0)
    await broker.place(order("m1", "buy", "market", "1"))
    assert rec.fills()[0].fill.price == D("105.0105")


# -- limit orders -----------------------------------------------------------------------------


async def test_limit_buy_rests_then_fills_at_its_price_as_maker_when_the_low_reaches_it() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("l1", "buy", "limit", "1", price="99"))
    assert rec.types() == ["submitted", "accepted"]
    await candle(broker, 1, 100.0, 101.0, 99.5, 100.0)
    assert rec.fills() == []
    await candle(broker, 2, 100.0, 100.0, 99.0, 99.5)  # the low touches the limit exactly
    [filled] = rec.fills()
    assert isinstance(filled, OrderFilled)
    assert (filled.fill.price, filled.fill.fee, filled.fill.liquidity) == (
        D(99),
        D("0.0198"),
        "maker",
    )
    assert filled.fill.time == minute(3)


async def test_limit_sell_fills_when_the_high_reaches_it() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("l1", "sell", "limit", "1", price="101"))
    await candle(broker, 1, 100.0, 101.0, 99.0, 100.0)
    fill = rec.fills()[0].fill
    assert (fill.price, fill.fee, fill.liquidity) == (D(101), D("0.0202"), "maker")


async def test_marketable_limit_fills_as_taker_at_the_better_of_limit_and_market() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("l1", "buy", "limit", "1", price="101"))
    await broker.place(order("l2", "buy", "limit", "1", price="100.005"))
    fills = [f.fill for f in rec.fills()]
    assert [(f.price, f.fee, f.liquidity) for f in fills] == [
        (D("100.01"), D("0.050005"), "taker"),
        (D("100.005"), D("0.0500025"), "taker"),
    ]


async def test_marketable_limit_takes_book_levels_up_to_its_price_then_rests() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    broker.on_book(SYM, bids=[(D(99), D(5))], asks=[(D(100), D(1)), (D(102), D(5))])
    state = await broker.place(order("l1", "buy", "limit", "3", price="101"))
    assert (state.filled, broker.order_status("l1")) == (D(1), "open")
    await candle(broker, 1, 101.5, 102.0, 100.5, 101.0)
    assert rec.types(2) == [
        "partially_filled",
        "changed",
        "balance",
        "filled",
        "changed",
        "balance",
    ]
    fills = [f.fill for f in rec.fills()]
    assert [(f.price, f.amount, f.liquidity) for f in fills] == [
        (D("100.01"), D(1), "taker"),
        (D(101), D(2), "maker"),
    ]


async def test_partial_fills_across_candles_respect_the_volume_cap() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0, volume=10.0)
    await broker.place(order("l1", "buy", "limit", "2.5", price="99"))
    for i in (1, 2, 3):
        await candle(broker, i, 99.5, 100.0, 98.0, 99.0, volume=10.0)
    assert rec.types() == [
        "submitted",
        "accepted",
        "partially_filled",
        "changed",
        "balance",
        "partially_filled",
        "changed",
        "balance",
        "filled",
        "changed",
        "balance",
    ]
    fills = rec.fills()
    assert [f.fill.amount for f in fills] == [D(1), D(1), D("0.5")]
    assert [f.order.filled for f in fills] == [D(1), D(2), D("2.5")]
    assert {f.fill.price for f in fills} == {D(99)}
    assert fills[-1].order.average_price == D(99)


async def test_candles_of_other_timeframes_never_fill() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("l1", "buy", "limit", "1", price="99"))
    await candle(broker, 1, 100.0, 100.0, 90.0, 91.0, timeframe="5m")
    assert rec.fills() == []
    await broker.place(order("m1", "sell", "market", "1"))
    assert rec.fills()[0].fill.price == D("99.99")  # the 5m close did not move the mark


# -- stops ------------------------------------------------------------------------------------


async def test_buy_stop_triggers_when_the_high_reaches_it_and_fills_at_stop_plus_slippage() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("s1", "buy", "stop_market", "1", stop="105"))
    await candle(broker, 1, 100.0, 104.0, 99.0, 103.0)
    assert rec.fills() == []
    await candle(broker, 2, 101.0, 106.0, 100.0, 105.5)
    fill = rec.fills()[0].fill
    assert (fill.price, fill.fee, fill.liquidity) == (D("105.0105"), D("0.05250525"), "taker")


async def test_stop_gapped_through_at_the_open_fills_at_the_open() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("s1", "buy", "stop_market", "1", stop="105"))
    await candle(broker, 1, 110.0, 111.0, 109.0, 110.5)
    assert rec.fills()[0].fill.price == D("110.011")


async def test_protective_sell_stop_gapped_down_fills_at_the_open_and_realises_the_loss() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("sl", "sell", "stop_market", "1", stop="95", reduce_only=True))
    await candle(broker, 1, 90.0, 91.0, 88.0, 89.0)
    assert rec.fills()[-1].fill.price == D("89.991")
    [position] = await broker.positions()
    assert (position.side, position.size, position.realised_pnl) == ("flat", D(0), D("-10.019"))


async def test_stop_already_beyond_its_price_at_placement_triggers_at_once() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    state = await broker.place(order("s1", "buy", "stop_market", "1", stop="99"))
    assert state.filled == 1 and rec.fills()[0].fill.price == D("100.01")


async def test_stop_limit_marketable_at_its_trigger_fills_as_taker() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("sl", "buy", "stop_limit", "1", price="106", stop="105"))
    await candle(broker, 1, 101.0, 107.0, 100.0, 106.5)
    fill = rec.fills()[0].fill
    assert (fill.price, fill.liquidity) == (D("105.0105"), "taker")


async def test_stop_limit_gapped_past_its_limit_rests_then_fills_as_maker() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("sl", "buy", "stop_limit", "1", price="106", stop="105"))
    await candle(broker, 1, 110.0, 112.0, 104.0, 108.0)  # triggers at the open, above the limit
    assert rec.fills() == [] and broker.order_status("sl") == "open"
    await candle(broker, 2, 107.0, 108.0, 105.5, 106.0)
    fill = rec.fills()[0].fill
    assert (fill.price, fill.fee, fill.liquidity) == (D(106), D("0.0212"), "maker")


# -- reduce-only ------------------------------------------------------------------------------


async def test_reduce_only_amount_is_trimmed_to_the_position() -> None:
    broker, _ = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    state = await broker.place(order("out", "sell", "market", "3", reduce_only=True))
    assert (state.amount, state.filled) == (D(1), D(1))
    assert broker.order_status("out") == "filled"
    [position] = await broker.positions()
    assert (position.side, position.realised_pnl) == ("flat", D("-0.02"))


async def test_reduce_only_is_rejected_without_a_position_or_when_it_would_add() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("r1", "sell", "market", "1", reduce_only=True))
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("r2", "buy", "limit", "1", price="90", reduce_only=True))
    reasons = [p.reason for p in rec.events if isinstance(p, OrderRejected)]
    assert reasons == [
        "reduce-only order but there is no BTC/USDT position to reduce",
        "reduce-only order would increase the long position",
    ]


async def test_reduce_only_orders_are_cancelled_when_the_position_closes() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("sl", "sell", "stop_market", "1", stop="90", reduce_only=True))
    await broker.place(order("tp", "sell", "limit", "1", price="110", reduce_only=True))
    await broker.place(order("out", "sell", "market", "1", reduce_only=True))
    cancelled = [p for p in rec.events if isinstance(p, OrderCancelled)]
    assert [(c.order.client_order_id, c.by) for c in cancelled] == [
        ("sl", "exchange"),
        ("tp", "exchange"),
    ]
    assert await broker.orders(open_only=True) == []


# -- idempotency, cancel, rejections ----------------------------------------------------------


async def test_same_client_order_id_returns_the_first_order_and_never_places_a_second() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    first = await broker.place(order("dup", "buy", "market", "1"))
    emitted = len(rec.events)
    again = await broker.place(order("dup", "buy", "market", "5"))
    assert again == first and len(rec.events) == emitted
    assert len(await broker.orders()) == 1
    [position] = await broker.positions()
    assert position.size == 1


async def test_a_rejected_client_order_id_stays_rejected_on_retry() -> None:
    broker, rec = paper()
    await broker.place(order("r", "buy", "market", "1"))
    await close_at(broker, 0, 100.0)
    await broker.place(order("r", "buy", "market", "1"))
    assert broker.order_status("r") == "rejected" and rec.types() == ["submitted", "rejected"]


async def test_cancel_closes_an_open_order_once_and_unknown_ids_raise_not_found() -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("l1", "buy", "limit", "1", price="90"))
    await broker.place(order("l2", "buy", "limit", "1", price="90"))
    await broker.cancel("l1")
    await broker.cancel("l2", reason="inspector")
    await broker.cancel("l1")
    cancelled = [p for p in rec.events if isinstance(p, OrderCancelled)]
    assert [(c.order.client_order_id, c.reason, c.by) for c in cancelled] == [
        ("l1", "user", "user"),
        ("l2", "inspector", "inspector"),
    ]
    await candle(broker, 1, 90.0, 91.0, 80.0, 85.0)
    assert rec.fills() == []
    with pytest.raises(NotFound):
        await broker.cancel("nope")


async def test_insufficient_balance_is_rejected_counting_open_orders() -> None:
    broker, rec = paper(accounts={"paper": {"USDT": D(1000)}})
    await close_at(broker, 0, 100.0)
    await broker.place(order("big", "buy", "market", "10"))
    await broker.place(order("l1", "buy", "limit", "5", price="99"))
    await broker.place(order("l2", "buy", "limit", "6", price="99"))
    await broker.place(order("l3", "buy", "limit", "5", price="99"))
    reasons = [p.reason for p in rec.events if isinstance(p, OrderRejected)]
    assert reasons == [
        "insufficient balance: needs 1000.60000000 USDT, free 1000.00000000 USDT",
        "insufficient balance: needs 594.29700000 USDT, free 504.75250000 USDT",
    ]
    [balance] = await broker.balances()
    usdt = balance.balances["USDT"]
    assert (usdt.used, usdt.free) == (D("990.495"), D("9.505"))


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (
            order("a", "buy", "market", "0.000000009"),
            "bad amount 0.000000009: must be at least 0.00000001",
        ),
        (order("a", "buy", "limit", "1"), "bad price: a limit order needs a price greater than 0"),
        (
            order("a", "buy", "stop_limit", "1", price="5"),
            "bad stop price: a stop_limit order needs a stop_price greater than 0",
        ),
        (order("a", "buy", "market", "1", symbol="ETH/USDT"), "no market data for ETH/USDT yet"),
        (
            order("a", "buy", "market", "1", symbol="BTCUSDT"),
            "bad symbol 'BTCUSDT': expected BASE/QUOTE, e.g. BTC/USDT",
        ),
        (
            order("a", "buy", "market", "1", account="main"),
            "unknown account 'main'; paper accounts: paper",
        ),
    ],
)
async def test_orders_that_cannot_be_placed_are_rejected_with_the_reason(
    request_: OrderRequest, reason: str
) -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    state = await broker.place(request_)
    rejected = rec.events[-1]
    assert isinstance(rejected, OrderRejected)
    assert (rejected.reason, rejected.by, state.order_id) == (reason, "exchange", None)
    assert rec.types() == ["submitted", "rejected"]


async def still_trades(broker: PaperBroker, rec: Recorder, i: int) -> None:
    """Assert that the broker answers every read and fills a normal order after a refusal."""
    [balance] = await broker.balances()
    assert balance.balances["USDT"].total == D(10_000)
    await broker.positions()
    state = await broker.place(order(f"ok-{i}", "buy", "limit", "1", price="99"))
    assert broker.order_status(state.client_order_id) == "open"
    await candle(broker, i, 100.0, 100.0, 98.0, 99.0)
    assert broker.order_status(state.client_order_id) == "filled"
    assert isinstance(rec.events[-1], BalanceUpdated)


POISON = [
    (order("p", "buy", "market", "1e30"), r"bad amount 1E\+30"),
    (order("p", "buy", "market", "NaN"), "bad amount NaN"),
    (order("p", "buy", "market", "sNaN"), "bad amount sNaN"),
    (order("p", "buy", "market", "Infinity"), "bad amount Infinity"),
    (order("p", "sell", "market", "-Infinity"), "bad amount -Infinity"),
    (order("p", "buy", "market", "0"), "bad amount 0"),
    (order("p", "buy", "market", "-1"), "bad amount -1"),
    (order("p", "buy", "market", "1000000000000001"), "at most 1e15"),
    (order("p", "buy", "limit", "1", price="1e30"), r"bad price 1E\+30"),
    (order("p", "buy", "limit", "1", price="NaN"), "bad price NaN"),
    (order("p", "buy", "limit", "1", price="0"), "bad price 0"),
    (order("p", "sell", "limit", "1", price="-5"), "bad price -5"),
    (order("p", "buy", "stop_market", "1", stop="Infinity"), "bad stop_price Infinity"),
    (order("p", "buy", "limit", "1e12", price="1e9"), "order value .* beyond .* 1e18"),
    (order("p", "buy", "market", "1e17"), "bad amount"),
    (order("", "buy", "market", "1"), "bad client_order_id"),
    (order("x" * 201, "buy", "market", "1"), "bad client_order_id"),
    (order("p", "hold", "market", "1"), "bad side 'hold'"),  # type: ignore[arg-type]
    (order("p", "buy", "iceberg", "1"), "bad order type 'iceberg'"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("request_", "message"), POISON)
async def test_absurd_orders_are_refused_before_any_state_changes_and_the_broker_still_trades(
    request_: OrderRequest, message: str
) -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    before = broker.snapshot()
    with pytest.raises(UsageError, match=message):
        await broker.place(request_)
    assert rec.events == [] and broker.snapshot() == before
    with pytest.raises(UsageError):  # and refused again, not remembered as an order
        await broker.place(request_)
    await still_trades(broker, rec, 1)


async def test_the_largest_order_within_bounds_fills_and_the_account_stays_exact() -> None:
    rich = {"paper": {"USDT": D(10) ** 18}}
    broker, rec = paper(accounts=rich, max_participation=None)
    await close_at(broker, 0, 1e15)
    state = await broker.place(order("big", "buy", "market", "900"))
    assert state.filled == 900 and state.average_price == D("1.0001E+15")
    await candle(broker, 1, 1e-8, 1e-8, 1e-8, 1e-8)  # a crash of 23 orders of magnitude
    await broker.place(order("out", "sell", "market", "900"))
    [position] = await broker.positions()
    [balance] = await broker.balances()
    usdt = balance.balances["USDT"]
    assert position.side == "flat" and usdt.total == D(10) ** 18 + position.realised_pnl - sum(
        f.fill.fee for f in rec.fills()
    )
    assert usdt.total < D(10) ** 17


@pytest.mark.parametrize(
    "row",
    [
        CandleRow(T0, 100.0, float("nan"), 90.0, 95.0, 10.0),
        CandleRow(T0, 100.0, float("inf"), 90.0, 95.0, 10.0),
        CandleRow(T0, 100.0, 1e30, 90.0, 95.0, 10.0),
        CandleRow(T0, 100.0, 100.0, 0.0, 95.0, 10.0),
        CandleRow(T0, 100.0, 100.0, -5.0, 95.0, 10.0),
        CandleRow(T0, 100.0, 100.0, 90.0, 95.0, -1.0),
        CandleRow(T0, 100.0, 100.0, 90.0, 95.0, float("nan")),
    ],
)
async def test_unusable_candles_are_ignored_whole_and_the_next_one_still_fills(
    row: CandleRow, caplog: pytest.LogCaptureFixture
) -> None:
    broker, rec = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("l", "buy", "limit", "1", price="99"))
    before, emitted = broker.snapshot(), len(rec.events)
    await broker.on_candle(SYM, "1m", row, T0 + 120_000)
    broker.on_trade(SYM, TradeRow(T0, "t", row.high, 1.0, "buy"))
    assert broker.snapshot() == before and len(rec.events) == emitted
    assert "paper broker ignored a BTC/USDT candle" in caplog.text
    await candle(broker, 2, 100.0, 100.0, 98.0, 99.0)
    assert broker.order_status("l") == "filled"


async def test_unusable_book_levels_are_dropped() -> None:
    broker, rec = paper()
    bad: list[tuple[float, float]] = [(float("nan"), 1.0), (1e30, 1.0), (101.0, float("inf"))]
    broker.on_book(SYM, [(99.0, 5.0)], [*bad, (100.0, 5.0)])
    state = await broker.place(order("m", "buy", "market", "1"))
    assert state.filled == 1 and rec.fills()[0].fill.price == D("100.01")


@pytest.mark.parametrize("value", [D("NaN"), D(-1), D("1e19")])
def test_an_absurd_opening_balance_is_a_config_error(value: Decimal) -> None:
    with pytest.raises(ConfigError, match="opening USDT balance"):
        paper(accounts={"paper": {"USDT": value}})


NUMBERS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.integers(-3, 40).map(lambda e: D(10) ** e),
    st.sampled_from([D("1e30"), D(0), D(-1), D("1e-30"), D("999999999999999.99999999")]),
)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("order"), st.sampled_from(SIDES), NUMBERS, NUMBERS),
            st.tuples(st.just("candle"), st.just("buy"), NUMBERS, NUMBERS),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_no_sequence_of_inputs_leaves_the_broker_unable_to_answer(
    steps: list[tuple[str, OrderSide, Decimal, Decimal]],
) -> None:
    async def run() -> None:
        broker, _ = paper(accounts={"paper": {"USDT": D(10) ** 18}})
        await close_at(broker, 0, 100.0)
        for i, (kind, side, a, b) in enumerate(steps, start=1):
            before = broker.snapshot()
            if kind == "candle":
                price = float(a) if a.is_finite() else float("nan")
                row = CandleRow(T0 + i * 60_000, price, price, price, price, 1000.0)
                await broker.on_candle(SYM, "1m", row, T0 + (i + 1) * 60_000)
                continue
            try:
                await broker.place(order(f"o{i}", side, "limit", str(a), price=str(b)))
            except UsageError:
                assert broker.snapshot() == before
            await broker.balances()
            await broker.positions()
        await still_trades_any(broker, len(steps) + 1)

    asyncio.run(run())


async def still_trades_any(broker: PaperBroker, i: int) -> None:
    """Assert a small market order is accepted and answered after anything that came before."""
    await close_at(broker, i, 100.0)
    state = await broker.place(order(f"final-{i}", "buy", "market", "0.001"))
    assert broker.order_status(state.client_order_id) in ("filled", "rejected")
    await broker.balances()


# -- PnL --------------------------------------------------------------------------------------


async def test_realised_and_unrealised_pnl_are_exact_through_add_reduce_and_flip() -> None:
    broker, _ = paper(slippage_bps=D(0))
    await close_at(broker, 0, 100.0)
    await broker.place(order("b1", "buy", "market", "1"))
    await close_at(broker, 1, 110.0)
    await broker.place(order("b2", "buy", "market", "1"))
    await close_at(broker, 2, 120.0)
    [position] = await broker.positions()
    assert (position.size, position.entry_price, position.unrealised_pnl) == (D(2), D(105), D(30))
    await broker.place(order("s1", "sell", "market", "1"))
    [position] = await broker.positions()
    assert (position.size, position.unrealised_pnl, position.realised_pnl) == (D(1), D(15), D(15))
    await close_at(broker, 3, 90.0)
    await broker.place(order("s2", "sell", "market", "2"))
    await close_at(broker, 4, 80.0)
    [position] = await broker.positions()
    assert (position.side, position.size, position.entry_price) == ("short", D(1), D(90))
    assert (position.mark_price, position.unrealised_pnl, position.realised_pnl) == (
        D(80),
        D(10),
        D(0),
    )
    [balance] = await broker.balances()
    usdt = balance.balances["USDT"]
    assert (usdt.total, usdt.used, usdt.free) == (D("9999.745"), D(90), D("9909.745"))


@settings(max_examples=40, deadline=None)
@given(
    trades=st.lists(
        st.tuples(st.sampled_from(SIDES), st.integers(1, 5), st.integers(1, 1000)),
        min_size=1,
        max_size=12,
    )
)
def test_closing_everything_realises_sells_minus_buys(
    trades: list[tuple[OrderSide, int, int]],
) -> None:
    async def run() -> tuple[Decimal, Decimal, Decimal]:
        broker, rec = paper(
            slippage_bps=D(0),
            taker_fee_bps=D(0),
            max_participation=None,
            accounts={"paper": {"USDT": D(10**9)}},
        )
        for i, (side, amount, price) in enumerate(trades):
            await close_at(broker, i, float(price))
            await broker.place(order(f"o{i}", side, "market", str(amount)))
        [position] = await broker.positions()
        if position.size:
            closing: OrderSide = "sell" if position.side == "long" else "buy"
            await broker.place(order("flat", closing, "market", str(position.size)))
        cash_flow = sum(
            (f.fill.price * f.fill.amount * (1 if f.order.side == "sell" else -1))
            for f in rec.fills()
        )
        [position] = await broker.positions()
        [balance] = await broker.balances()
        return D(cash_flow), position.realised_pnl, balance.balances["USDT"].total - 10**9

    cash_flow, realised, cash_change = asyncio.run(run())
    assert realised == cash_change
    assert abs(realised - cash_flow) <= D("0.000001") * len(trades)


# -- contracts and persistence ----------------------------------------------------------------


async def test_every_emitted_payload_is_a_contract_model_and_round_trips_the_codec() -> None:
    broker, rec = paper(accounts={"paper": {"USDT": D(1000)}})
    await close_at(broker, 0, 100.0, volume=10.0)
    await broker.place(order("m", "buy", "market", "1.5"))
    await broker.place(order("sl", "sell", "stop_market", "9", stop="90", reduce_only=True))
    await broker.place(order("no", "buy", "market", "100"))
    await broker.place(order("l", "buy", "limit", "1", price="50"))
    await broker.cancel("l")
    await candle(broker, 1, 101.0, 102.0, 85.0, 86.0, volume=10.0)
    kinds = {type(p) for p in rec.events}
    assert kinds == set(EVENTS)
    for payload in rec.events:
        event = make_event(payload, source="provider/paper")
        decoded = decode(encode(event), event.type)
        assert decoded == event and type(decoded.payload) is type(payload)


async def test_a_restored_snapshot_carries_on_with_orders_positions_and_balances() -> None:
    broker, _ = paper()
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("tp", "sell", "limit", "1", price="110", reduce_only=True))
    data = json.loads(json.dumps(broker.snapshot()))
    again, _ = paper()
    again.restore(data)
    assert await again.orders() == await broker.orders()
    assert await again.positions() == await broker.positions()
    assert await again.balances() == await broker.balances()
    assert await again.place(order("in", "buy", "market", "7")) == (await broker.orders())[0]
    await candle(again, 1, 105.0, 111.0, 104.0, 109.0)
    assert again.order_status("tp") == "filled"
    [position] = await again.positions()
    assert (position.side, position.realised_pnl) == ("flat", D("9.99"))


async def test_events_leave_in_order_when_the_emit_callback_places_an_order() -> None:
    seen: list[Payload] = []
    broker: PaperBroker

    async def emit(event: Envelope[Any]) -> None:
        payload = event.payload
        seen.append(payload)
        await asyncio.sleep(0)
        if isinstance(payload, OrderFilled) and payload.order.client_order_id == "in":
            await broker.place(order("sl", "sell", "stop_market", "1", stop="90", reduce_only=True))

    broker = PaperBroker(emit, clock=lambda: NOW)
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    assert [p.event_type for p in seen] == [
        "order.submitted",
        "order.accepted",
        "order.filled",
        "position.changed",
        "account.balance",
        "order.submitted",
        "order.accepted",
    ]
    assert broker.order_status("sl") == "open"


# -- restarts on paper.db ---------------------------------------------------------------------


def stored(path: Path, **options: object) -> tuple[PaperBroker, Recorder, BrokerStore]:
    store = BrokerStore(path)
    broker, rec = paper(store=store, **options)
    return broker, rec, store


async def test_a_reopened_broker_resumes_balances_orders_positions_and_the_id_sequence(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, rec, store = stored(path)
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("tp", "sell", "limit", "1", price="110", reduce_only=True))
    await broker.place(order("no", "buy", "market", "1000"))  # rejected: insufficient balance
    before = (await broker.orders(), await broker.positions(), await broker.balances())
    fills = [(f.order.client_order_id, f.fill) for f in rec.fills()]
    store.close()

    again, _, store2 = stored(path)
    assert (await again.orders(), await again.positions(), await again.balances()) == before
    assert [(f.client_order_id, f.fill) for f in store2.fills()] == fills
    assert again.order_status("tp") == "open" and again.order_status("no") == "rejected"
    placed = await again.place(order("next", "buy", "limit", "1", price="50"))
    assert placed.order_id == "paper-4"  # not paper-1 again
    await candle(again, 1, 105.0, 111.0, 104.0, 109.0)
    assert again.order_status("tp") == "filled"
    [position] = await again.positions()
    assert (position.side, position.realised_pnl) == ("flat", D("9.99"))
    after = (await again.orders(), await again.positions(), await again.balances())
    store2.close()

    third, _, store3 = stored(path)
    assert (await third.orders(), await third.positions(), await third.balances()) == after
    assert [f.fill.trade_id for f in store3.fills()] == ["paper-1-1", "paper-2-1"]
    store3.close()


async def test_a_client_order_id_is_never_placed_twice_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    await broker.place(order("early", "buy", "market", "1"))  # rejected: no market data yet
    await close_at(broker, 0, 100.0)
    first = await broker.place(order("dup", "buy", "market", "1"))
    store.close()

    again, rec, store2 = stored(path)
    assert await again.place(order("dup", "buy", "market", "5")) == first
    retried = await again.place(order("early", "buy", "market", "1"))
    assert retried.status == "rejected" and rec.events == []
    [position] = await again.positions()
    assert position.size == 1 and len(await again.orders()) == 2
    store2.close()


async def test_the_last_price_survives_a_restart_so_orders_need_no_new_candle(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    await close_at(broker, 0, 100.0)
    broker.on_trade(SYM, TradeRow(T0 + 61_000, "t1", 102.0, 0.5, "buy"))
    await broker.place(order("l", "buy", "limit", "1", price="50"))  # a write carries the trade
    store.close()

    again, rec, store2 = stored(path)
    state = await again.place(order("m", "buy", "market", "1"))
    assert state.filled == 1 and rec.fills()[0].fill.price == D("102.0102")
    store2.close()


async def test_a_triggered_stop_limit_stays_triggered_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    await close_at(broker, 0, 100.0)
    await broker.place(order("sl", "buy", "stop_limit", "1", price="106", stop="105"))
    await candle(broker, 1, 110.0, 112.0, 104.0, 108.0)  # triggers above its limit: rests
    store.close()

    again, rec, store2 = stored(path)
    await candle(again, 2, 107.0, 108.0, 105.5, 106.0)
    fill = rec.fills()[0].fill
    assert (fill.price, fill.liquidity) == (D(106), "maker")
    store2.close()


async def test_stored_accounts_keep_their_balances_and_new_configured_ones_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    [kept] = await broker.balances()
    store.close()

    accounts = {"paper": {"USDT": D(5)}, "second": {"USDT": D(777)}}
    again, _, store2 = stored(path, accounts=accounts)
    assert await again.balances("paper") == [kept]
    [second] = await again.balances("second")
    assert second.balances["USDT"].total == D(777)
    store2.close()
    third, _, store3 = stored(path)
    assert [b.account for b in await third.balances()] == ["paper", "second"]
    store3.close()


async def test_restore_replaces_the_stored_account_too(tmp_path: Path) -> None:
    source, _ = paper()
    await close_at(source, 0, 100.0)
    await source.place(order("a", "buy", "market", "2"))
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    await close_at(broker, 0, 50.0)
    await broker.place(order("b", "sell", "market", "1"))
    broker.restore(source.snapshot())
    store.close()

    again, _, store2 = stored(path)
    assert again.snapshot() == source.snapshot()
    assert [o.client_order_id for o in await again.orders()] == ["a"]
    store2.close()


async def test_a_change_the_store_cannot_write_is_undone_whole_and_said_so(
    tmp_path: Path,
) -> None:
    broker, rec, store = stored(tmp_path / "paper.db")
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("l", "buy", "limit", "1", price="99"))
    before, emitted = broker.snapshot(), len(rec.events)
    store.close()  # the disk goes away under the broker
    with pytest.raises(TransientError, match=r"could not write .*paper\.db.*nothing changed"):
        await broker.place(order("more", "buy", "market", "1"))
    assert broker.snapshot() == before and len(rec.events) == emitted
    with pytest.raises(NotFound):
        broker.order_status("more")
    await candle(broker, 1, 100.0, 100.0, 98.0, 99.0)  # fills "l", cannot store it: undone
    assert broker.snapshot() == before and len(rec.events) == emitted
    assert broker.order_status("l") == "open"


async def test_candles_that_fill_nothing_write_no_transaction_until_an_order_carries_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    commits = 0
    real_commit = store.commit

    def counting(change: object) -> None:
        nonlocal commits
        commits += 1
        real_commit(change)  # type: ignore[arg-type]

    store.commit = counting  # type: ignore[method-assign]
    for i in range(20):
        await close_at(broker, i, 100.0 + i)
    assert commits == 0  # marks only: about 0.3 ms each saved on a full-speed replay
    await broker.place(order("l", "buy", "limit", "1", price="50"))
    assert commits == 1
    store.close()
    again, rec, store2 = stored(path)
    state = await again.place(order("m", "buy", "market", "1"))
    assert state.filled == 1 and rec.fills()[0].fill.price > D("119")  # the last close, 119
    store2.close()
