"""A signal waits for the context of its own moment: its candle, and in a replay its book.

Candles, books and signals travel on separate streams. Priced from the book of the moment
before, a `bfx up` entry differed from the backtest's (docs/backtest.md, "Parity"); so on a
market clock a signal waits until the newest book read is at least its candle's close.
"""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.advisor.service import Advisor
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.market import BookUpdated, CandleClosed
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import Clock, LiveClock, SimClock
from barfinex_cli.runtime.config import AdvisorConfig

T0 = 1_704_067_200_000
MINUTE = 60_000


def _advisor(clock: Clock) -> Advisor:
    return Advisor(
        AdvisorConfig(port=0, join_registry=False, serve_api=False, context_wait_s=30),
        bus=MemoryBus("ctx"), clock=clock, client=GatewayClient("http://127.0.0.1:9", "t0ken"),
    )  # fmt: skip


def _candle(minute: int) -> CandleClosed:
    price = Decimal(42000 + minute)
    return CandleClosed(
        exchange="synthetic", symbol="BTC/USDT", timeframe="1m",
        open_time=from_ms(T0 + minute * MINUTE), open=price, high=price + 5, low=price - 5,
        close=price, volume=Decimal(1),
    )  # fmt: skip


def _book(at_minute: int) -> BookUpdated:
    price = Decimal(42000 + at_minute)
    return BookUpdated(
        exchange="synthetic", symbol="BTC/USDT", bids=[(price - 1, Decimal(1))],
        asks=[(price + 1, Decimal(1))], snapshot=True, time=from_ms(T0 + at_minute * MINUTE),
    )  # fmt: skip


def _signal(minute: int) -> object:
    return make_event(
        SignalGenerated(
            strategy="manual", instance="manual", exchange="synthetic", symbol="BTC/USDT",
            timeframe="1m", candle_time=from_ms(T0 + minute * MINUTE), direction="long",
            score=2.0, threshold=2.0, attribution=[],
        ),
        source="detector/manual",
    )  # fmt: skip


def test_in_a_replay_a_signal_with_its_candle_but_the_book_before_waits_for_its_book() -> None:
    advisor = _advisor(SimClock(T0))
    advisor.context.apply(_candle(4))
    advisor.context.apply(_book(4))  # the close of the 03:00 candle, the moment before
    advisor.context.apply(_candle(5))
    signal = _signal(5)  # the 00:05 candle, closing at 00:06
    assert advisor._context_behind(signal)  # type: ignore[arg-type]
    advisor.context.apply(_book(6))  # the book of the signal's own moment
    assert not advisor._context_behind(signal)  # type: ignore[arg-type]
    assert advisor._snapshot(signal.payload).ask == 42007.0  # type: ignore[attr-defined]


def test_with_no_book_on_the_bus_or_live_a_signal_waits_only_for_its_candle() -> None:
    replay = _advisor(SimClock(T0))
    replay.context.apply(_candle(5))
    assert not replay._context_behind(_signal(5))  # type: ignore[arg-type]  # a candle file
    live = _advisor(LiveClock())
    live.context.apply(_candle(5))
    live.context.apply(_book(4))
    assert not live._context_behind(_signal(5))  # type: ignore[arg-type]  # live: newest book
    assert live._context_behind(_signal(6))  # type: ignore[arg-type]  # its candle is not in
