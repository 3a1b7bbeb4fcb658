"""The last best bid and ask per symbol, and whether a close should wait for a better book.

The provider publishes `market.book` (top levels with sizes) and `market.ticker` (best bid and
ask, no sizes) on the bus; the inspector keeps the last of each per symbol. When it has seen
neither for a symbol it asks the provider's `GET /api/v1/orderbook` once per close. A close
waits (`close_wait`) while the spread is wider than `execution.max_close_spread_bps` or the
top level it would trade into (the best bid for a sell, the best ask for a buy) is worth less
than `execution.min_close_depth`; with no quote at all nothing says the market is thin, and the
close goes. A ticker's bid or ask that moved drops the size the last book gave that side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from barfinex_cli.contracts.market import BookUpdated, TickerUpdated
from barfinex_cli.inspector.policies.config import ExecutionLimits

BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class Quote:
    """The top of one symbol's book: best prices, and their sizes when a book gave them."""

    bid: Decimal | None
    ask: Decimal | None
    bid_size: Decimal | None = None
    ask_size: Decimal | None = None

    @property
    def spread_bps(self) -> float | None:
        """Return ask minus bid over the mid in basis points, or None without both sides."""
        if self.bid is None or self.ask is None or self.bid <= 0 or self.ask <= 0:
            return None
        mid = (self.bid + self.ask) / 2
        return float((self.ask - self.bid) / mid * BPS)


def of_book(book: BookUpdated) -> Quote:
    """Return the top of `book`."""
    bid = book.bids[0] if book.bids else None
    ask = book.asks[0] if book.asks else None
    return Quote(
        bid=None if bid is None else bid[0],
        ask=None if ask is None else ask[0],
        bid_size=None if bid is None else bid[1],
        ask_size=None if ask is None else ask[1],
    )


def with_ticker(last: Quote | None, ticker: TickerUpdated) -> Quote:
    """Return `last` moved to the ticker's bid and ask (a side that moved loses its size)."""
    if last is None:
        return Quote(bid=ticker.bid, ask=ticker.ask)
    return replace(
        last,
        bid=ticker.bid,
        ask=ticker.ask,
        bid_size=last.bid_size if ticker.bid == last.bid else None,
        ask_size=last.ask_size if ticker.ask == last.ask else None,
    )


def close_wait(quote: Quote | None, side: str, limits: ExecutionLimits) -> str | None:
    """Return why a close on `side` ("sell" or "buy") should wait now, or None to send it."""
    if quote is None:
        return None
    widest = limits.max_close_spread_bps
    spread = quote.spread_bps
    if widest is not None and spread is not None and spread > widest:
        return f"spread {spread:.1f} bps wider than {widest:g}"
    least = limits.min_close_depth
    price, size = (quote.bid, quote.bid_size) if side == "sell" else (quote.ask, quote.ask_size)
    if least is not None and price is not None and size is not None and price * size < least:
        where = "best bid" if side == "sell" else "best ask"
        return f"{where} {size} at {price} worth {price * size:.2f}, below {least}"
    return None


class Quotes:
    """The last quote per symbol, as the bus brings books and tickers."""

    def __init__(self) -> None:
        self._last: dict[str, Quote] = {}

    def book(self, book: BookUpdated) -> None:
        """Take the top of a `market.book`."""
        if book.bids or book.asks:
            self._last[book.symbol] = of_book(book)

    def ticker(self, ticker: TickerUpdated) -> None:
        """Take the best bid and ask of a `market.ticker`."""
        self._last[ticker.symbol] = with_ticker(self._last.get(ticker.symbol), ticker)

    def get(self, symbol: str) -> Quote | None:
        """Return the last quote of `symbol`, or None if none was seen."""
        return self._last.get(symbol)

    def put(self, symbol: str, quote: Quote) -> None:
        """Remember `quote` for `symbol` (a book read from the provider's REST answer)."""
        self._last[symbol] = quote
