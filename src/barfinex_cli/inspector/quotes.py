"""The top of a symbol's book, and whether a close should wait for a better one.

A close the inspector sends, and an entry judged by the `market` policies, asks the provider for
the last book it saw (`GET /api/v1/orderbook`: top levels with sizes, the same book it publishes
as `market.book`) at that moment, so the inspector consumes no book stream it would mostly
ignore.
Where the provider holds no book (a candle-only feed) the last `market.ticker` of the symbol
(best bid and ask, no sizes) stands in. A close waits (`close_wait`) while the spread is wider
than `execution.max_close_spread_bps` or the top level it would trade into (the best bid for a
sell, the best ask for a buy) is worth less than `execution.min_close_depth`; with no quote at
all nothing says the market is thin, and the close goes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from barfinex_cli.contracts.market import BookUpdated, TickerUpdated
from barfinex_cli.errors import BfxError
from barfinex_cli.inspector.policies.config import ExecutionLimits
from barfinex_cli.runtime.client import GatewayClient

log = logging.getLogger("bfx.inspector")

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
    """The last ticker quote per symbol, as the bus brings them."""

    def __init__(self) -> None:
        self._last: dict[str, Quote] = {}

    def ticker(self, ticker: TickerUpdated) -> None:
        """Take the best bid and ask of a `market.ticker`."""
        self._last[ticker.symbol] = Quote(bid=ticker.bid, ask=ticker.ask)

    def get(self, symbol: str) -> Quote | None:
        """Return the last quote of `symbol`, or None if none was seen."""
        return self._last.get(symbol)


async def top_of_book(client: GatewayClient, quotes: Quotes, symbol: str) -> Quote | None:
    """Return the provider's last book of `symbol` (`GET /orderbook`), else its last ticker."""
    try:
        return of_book(await client.orderbook(symbol))
    except BfxError as exc:  # none seen (a candle-only feed), or the provider away
        log.debug("no book for %s: %s", symbol, exc)
        return quotes.get(symbol)
