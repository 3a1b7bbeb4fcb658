"""The provider's pure core: a market payload in, the rows to store and the events to publish out.

No IO here. The service (`provider.service`) applies each `Step` in order: it writes the rows,
publishes the payloads and feeds the broker; a backtest applies the same steps to its own stores,
so live, replay and backtest build identical candles the same way:

- a closed base candle is kept, published, folded into every higher timeframe (each higher candle
  that closes is kept and published too), then shown to the broker;
- a trade is kept, published, shown to the broker, and, on a trade tape (a symbol whose candles
  the feed does not stream), folded into the base candle, which then goes the way above;
- a book is remembered and shown to the broker; anything else is published as it is;
- a candle or trade dated too far ahead (`market.horizon`: past the wall clock live, past the
  last close of its series in a replay) is refused: nothing is kept, published or folded, and the
  step asks for an incident instead, so one bad date never moves the data clock or stalls a
  consumer that waits for "newer" candles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from barfinex_cli.contracts.market import BookUpdated, CandleClosed, TradeExecuted
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.market.candles import CandleAggregator, timeframe_ms, to_event
from barfinex_cli.market.horizon import too_far_ahead
from barfinex_cli.store.market import CandleRow, SeriesKey, TradeRow


@dataclass(frozen=True, slots=True)
class KeepCandle:
    """Store a closed candle (before its event is published)."""

    key: SeriesKey
    row: CandleRow


@dataclass(frozen=True, slots=True)
class KeepTrade:
    """Store a trade."""

    exchange: str
    symbol: str
    row: TradeRow


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish a payload."""

    payload: Payload


@dataclass(frozen=True, slots=True)
class FeedCandle:
    """Show a closed base candle to the broker (resting orders match against it)."""

    symbol: str
    timeframe: str
    row: CandleRow
    closed_ms: int


@dataclass(frozen=True, slots=True)
class FeedTrade:
    """Show a trade to the broker."""

    symbol: str
    row: TradeRow


@dataclass(frozen=True, slots=True)
class FeedBook:
    """Show a book to the broker."""

    book: BookUpdated


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse a candle or trade dated too far ahead; the service raises an incident."""

    key: SeriesKey
    open_ms: int
    reason: str


Action = KeepCandle | KeepTrade | Publish | FeedCandle | FeedTrade | FeedBook | Refuse


@dataclass
class Step:
    """What one payload asks of the provider, in the order it must happen."""

    actions: list[Action] = field(default_factory=list)


def candle_row(candle: CandleClosed) -> CandleRow:
    """Return the store row of a closed candle event."""
    buys, sells = candle.buy_volume, candle.sell_volume
    return CandleRow(
        to_ms(candle.open_time),
        float(candle.open), float(candle.high), float(candle.low), float(candle.close),
        float(candle.volume), candle.trades,
        None if buys is None else float(buys), None if sells is None else float(sells),
    )  # fmt: skip


class Pipeline:
    """Turn market payloads into steps; keeps the aggregators and the data clock."""

    def __init__(
        self,
        timeframes: Sequence[str],
        *,
        base_timeframe: str = "1m",
        candle_symbols: frozenset[str] | None = None,
        max_ahead_s: float | None = None,
    ) -> None:
        self.max_ahead_s = max_ahead_s
        """The `[provider] max_candle_ahead_s` bound; None applies `market.horizon`'s defaults."""
        self.last_close: dict[SeriesKey, int] = {}
        """Per series (trades under timeframe "trade"): the newest close (or trade time) kept."""
        self.refused = 0
        self.timeframes = tuple(sorted(set(timeframes) | {"1m"}))
        self.base_timeframe = base_timeframe
        self.candle_symbols = candle_symbols
        self.aggregators: dict[str, CandleAggregator] = {}
        """Per symbol: base candles -> higher timeframes."""
        self.trade_aggregators: dict[str, CandleAggregator] = {}
        """Per trade-tape symbol: trades -> base candles."""
        self.clock_ms = 0
        """The data clock: the close time of the newest candle, or the newest trade's time."""
        self.candles = 0
        self.books: dict[str, BookUpdated] = {}

    def feed(self, payload: Payload, *, now_ms: int | None = None) -> Step:
        """Return what one payload from the connector asks for.

        `now_ms` is the wall clock of a live feed (candles are judged against it); None judges a
        replay's candles against the last close of their series.
        """
        step = Step()
        if isinstance(payload, CandleClosed | TradeExecuted):
            refusal = self._refusal(payload, now_ms)
            if refusal is not None:
                self.refused += 1
                step.actions.append(refusal)
                return step
        if isinstance(payload, CandleClosed):
            self._base(step, payload, candle_row(payload))
        elif isinstance(payload, TradeExecuted):
            self._trade(step, payload)
        elif isinstance(payload, BookUpdated):
            self.books[payload.symbol] = payload
            step.actions.append(FeedBook(payload))
            step.actions.append(Publish(payload))
        else:
            step.actions.append(Publish(payload))
        return step

    def history(self, exchange: str, symbol: str, rows: Sequence[CandleRow]) -> list[KeepCandle]:
        """Return the higher-timeframe rows that stored base history builds (nothing published)."""
        aggregator = self._aggregator(symbol)
        kept: list[KeepCandle] = []
        for row in rows:
            for tf, closed in aggregator.add_candle(self.base_timeframe, row):
                kept.append(KeepCandle(SeriesKey(exchange, symbol, tf), closed))
        if rows:
            close = rows[-1].open_ms + timeframe_ms(self.base_timeframe)
            self.clock_ms = max(self.clock_ms, close)
            key = SeriesKey(exchange, symbol, self.base_timeframe)
            self.last_close[key] = max(self.last_close.get(key, 0), close)
        return kept

    def _refusal(self, payload: CandleClosed | TradeExecuted, now_ms: int | None) -> Refuse | None:
        """Return a refusal if `payload` is dated too far ahead (`market.horizon`), else None."""
        if isinstance(payload, CandleClosed):
            key = SeriesKey(payload.exchange, payload.symbol, payload.timeframe)
            tf_ms = timeframe_ms(payload.timeframe)
            open_ms = to_ms(payload.open_time)
            close_ms = open_ms + tf_ms
        else:
            key = SeriesKey(payload.exchange, payload.symbol, "trade")
            tf_ms = timeframe_ms(self.base_timeframe)
            open_ms = close_ms = to_ms(payload.time)
        live = now_ms is not None
        reference = now_ms if live else (self.last_close.get(key) or self.clock_ms or None)
        reason = too_far_ahead(close_ms, reference, tf_ms, live=live, max_ahead_s=self.max_ahead_s)
        return None if reason is None else Refuse(key, open_ms, reason)

    def close_trade_candles(self, exchange: str, until_ms: int) -> Step:
        """Close the trade-built candles whose bucket ended by `until_ms` (a timer calls this)."""
        step = Step()
        for symbol, tape in self.trade_aggregators.items():
            for tf, row in tape.flush_until(until_ms):
                self._base(step, to_event((exchange, symbol), tf, row), row)
        return step

    def _aggregator(self, symbol: str) -> CandleAggregator:
        aggregator = self.aggregators.get(symbol)
        if aggregator is None:
            aggregator = self.aggregators[symbol] = CandleAggregator(self.timeframes)
        return aggregator

    def _base(self, step: Step, candle: CandleClosed, row: CandleRow) -> None:
        key = SeriesKey(candle.exchange, candle.symbol, candle.timeframe)
        step.actions.append(KeepCandle(key, row))
        close = row.open_ms + timeframe_ms(candle.timeframe)
        self.clock_ms = max(self.clock_ms, close)
        self.last_close[key] = max(self.last_close.get(key, 0), close)
        self.candles += 1
        step.actions.append(Publish(candle))
        for tf, closed in self._aggregator(candle.symbol).add_candle(candle.timeframe, row):
            step.actions.append(KeepCandle(SeriesKey(candle.exchange, candle.symbol, tf), closed))
            step.actions.append(Publish(to_event((candle.exchange, candle.symbol), tf, closed)))
            self.candles += 1
        step.actions.append(FeedCandle(candle.symbol, candle.timeframe, row, self.clock_ms))

    def _trade(self, step: Step, trade: TradeExecuted) -> None:
        time_ms = to_ms(trade.time)
        row = TradeRow(time_ms, trade.trade_id, float(trade.price), float(trade.amount), trade.side)
        step.actions.append(KeepTrade(trade.exchange, trade.symbol, row))
        self.clock_ms = max(self.clock_ms, time_ms)
        key = SeriesKey(trade.exchange, trade.symbol, "trade")
        self.last_close[key] = max(self.last_close.get(key, 0), time_ms)
        step.actions.append(Publish(trade))
        step.actions.append(FeedTrade(trade.symbol, row))
        if self.candle_symbols is None or trade.symbol in self.candle_symbols:
            return
        # A trade tape: trades build the base candle (with its order flow), which then goes the
        # way of a streamed candle; higher timeframes come from base candles, so the history
        # stored at start and the live candles build them alike.
        tape = self.trade_aggregators.get(trade.symbol)
        if tape is None:
            tape = self.trade_aggregators[trade.symbol] = CandleAggregator((self.base_timeframe,))
        for tf, closed in tape.add_trade(
            time_ms, float(trade.price), float(trade.amount), trade.side
        ):
            self._base(step, to_event((trade.exchange, trade.symbol), tf, closed), closed)
