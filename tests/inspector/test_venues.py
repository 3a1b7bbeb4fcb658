"""Where each guard lives per venue, when an emulated one fires, when a close waits: pure rules.

The venues are the real ones: the paper broker's answer, and ccxt exchange clients built from
ccxt's own `has` flags (no network: building a ccxt client opens no connection).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from barfinex_cli.contracts.market import BookUpdated, TickerUpdated
from barfinex_cli.contracts.rest import BrokerCapabilities
from barfinex_cli.inspector.emulation import Guarded, describe, held_by_venue, touched
from barfinex_cli.inspector.policies.config import ExecutionLimits
from barfinex_cli.inspector.quotes import Quote, Quotes, close_wait, of_book
from barfinex_cli.provider.paper.broker import PaperBroker
from barfinex_cli.store.inspector import PositionRecord

D = Decimal
LONG = PositionRecord(
    symbol="BTC/USDT", side="long", size=D(1), entry=D(100), opened_ms=0, decision_id="d",
    stop=D(98), take_profit=D(104),
)  # fmt: skip
SHORT = PositionRecord(
    symbol="BTC/USDT", side="short", size=D(1), entry=D(100), opened_ms=0, decision_id="d",
    stop=D(102), take_profit=D(96),
)  # fmt: skip
BOTH: tuple[Guarded, ...] = ("stop_loss", "take_profit")
STOP_ONLY: tuple[Guarded, ...] = ("stop_loss",)


async def _nowhere(payload: object) -> None:
    return None


def test_the_paper_broker_holds_both_guards_unless_the_policy_says_emulate() -> None:
    paper = PaperBroker(_nowhere).capabilities()
    assert (paper.stop_orders, paper.reduce_only) == (True, True)
    assert describe(paper, "auto") == {"stop_loss": "venue", "take_profit": "venue"}
    assert describe(paper, "emulate") == {"stop_loss": "emulated", "take_profit": "emulated"}


@pytest.mark.parametrize(
    ("exchange", "stop", "take"),
    [
        ("binanceusdm", "venue", "venue"),  # trigger orders and reduce-only
        ("bybit", "venue", "venue"),
        ("okx", "venue", "venue"),
        ("kraken", "emulated", "emulated"),  # stop orders, but reduce-only unknown to ccxt
        ("coinbase", "emulated", "emulated"),  # no reduce-only
        ("bitstamp", "emulated", "emulated"),  # neither
    ],
)
def test_a_ccxt_exchange_holds_the_guards_its_has_flags_allow(
    exchange: str, stop: str, take: str
) -> None:
    from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector

    venue = CcxtConnector(exchange).capabilities()
    assert venue.exchange == exchange and "createReduceOnlyOrder" in venue.source
    assert describe(venue, "auto") == {"stop_loss": stop, "take_profit": take}


def test_a_venue_with_reduce_only_but_no_stop_orders_holds_the_take_profit_only() -> None:
    venue = BrokerCapabilities(broker="x", exchange="x", stop_orders=False, reduce_only=True)
    assert held_by_venue("take_profit", venue, "auto")
    assert not held_by_venue("stop_loss", venue, "auto")
    assert held_by_venue("stop_loss", None, "auto")  # a provider that does not say: as before


def test_an_emulated_long_stop_fires_at_or_below_it_and_its_take_profit_at_or_above() -> None:
    assert touched(LONG, D("98.01"), D(103), BOTH, "candle") is None
    stop = touched(LONG, D(98), D(99), BOTH, "candle")
    assert stop is not None and (stop.kind, stop.level) == ("stop_loss", D(98))
    take = touched(LONG, D(101), D(104), BOTH, "candle")
    assert take is not None and (take.kind, take.level) == ("take_profit", D(104))
    assert "candle at 104 reached the take-profit 104" in take.reason


def test_a_candle_reaching_both_guards_fires_the_stop() -> None:
    both = touched(LONG, D(97), D(105), BOTH, "candle")
    assert both is not None and both.kind == "stop_loss"


def test_an_emulated_short_stop_fires_at_or_above_it_and_only_emulated_guards_fire() -> None:
    stop = touched(SHORT, D(101), D(102), BOTH, "ticker")
    assert stop is not None and stop.kind == "stop_loss" and "ticker at 102" in stop.reason
    take = touched(SHORT, D(96), D(96), BOTH, "ticker")
    assert take is not None and take.kind == "take_profit"
    assert touched(SHORT, D(95), D(95), STOP_ONLY, "ticker") is None  # the venue has it


def test_a_close_waits_while_the_spread_is_wide_or_the_level_it_hits_is_thin() -> None:
    limits = ExecutionLimits(max_close_spread_bps=20, min_close_depth=D(500))
    assert close_wait(None, "sell", limits) is None  # nothing says the market is bad
    wide = Quote(bid=D(99), ask=D(101), bid_size=D(100), ask_size=D(100))
    assert (close_wait(wide, "sell", limits) or "").startswith("spread 200.0 bps")
    thin_bid = Quote(bid=D("99.99"), ask=D(100), bid_size=D(1), ask_size=D(100))
    assert "best bid 1 at 99.99" in (close_wait(thin_bid, "sell", limits) or "")
    assert close_wait(thin_bid, "buy", limits) is None  # a buy takes the deep ask
    assert close_wait(wide, "sell", ExecutionLimits()) is None  # limits off: never waits


def test_a_ticker_gives_the_best_bid_and_ask_of_its_symbol_without_sizes() -> None:
    quotes = Quotes()
    at = datetime(2024, 1, 1, tzinfo=UTC)
    quotes.ticker(TickerUpdated(exchange="x", symbol="S", bid=D(99), ask=D("100.5"),
                                last=D(100), time=at))  # fmt: skip
    assert quotes.get("S") == Quote(bid=D(99), ask=D("100.5"))
    assert quotes.get("T") is None
    book = BookUpdated(exchange="x", symbol="S", bids=[(D(99), D(5))], asks=[], time=at)
    assert of_book(book) == Quote(bid=D(99), ask=None, bid_size=D(5))
