"""The advisor's memory of the market: kept current from the bus, read by every signal for free.

The per-signal path must make no network call, so the advisor keeps what the first stage needs in
memory: recent closed candles per series, the last top of book, open positions, balances and the
integrity of each series (gaps, the provider's incidents and their quality score, connector
health). The service fills it once over the gateway client (warm-up) and then applies every
`market.*`, `position.changed`, `account.balance` and `provider.*` event it consumes. A signal
reads one immutable `Snapshot` of its series.

Everything here is plain floats: the pipeline's arithmetic is estimates (ATR, spread, scores);
prices become `Decimal` again only in the events.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from barfinex_cli.contracts.market import (
    BookUpdated,
    CandleClosed,
    ConnectorHealth,
    GapDetected,
    GapRepaired,
    IncidentEscalated,
    IncidentOpened,
    IncidentResolved,
    TickerUpdated,
)
from barfinex_cli.contracts.orders import BalanceUpdated, PositionChanged
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.market.candles import timeframe_ms

SeriesKey = tuple[str, str, str]
"""(exchange, symbol, timeframe)."""

KEEP = 150
"""Candles a snapshot shows per series: the features' window (114) and the ATR's, with room."""

RETAIN = 20_000
"""Candles held per series. More than a snapshot shows, because in a replay at full speed the
context runs ahead of the signals (it reads candles faster than the detector turns them into
signals), and a signal must still see the candles up to its own."""

GAP_WINDOW = 50
"""Recent gaps are those that began within this many candles of the newest one."""

_COLUMNS = ("high", "low", "close", "volume")

CONTEXT_TYPES = (
    "market.candle",
    "market.book",
    "market.ticker",
    "market.gap",
    "market.repaired",
    "provider.health",
    "provider.incident.*",
    "position.changed",
    "account.balance",
)
"""The event types that keep the context current."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the context knows of one series at the moment a signal reads it."""

    exchange: str
    symbol: str
    timeframe: str
    candles: tuple[dict[str, float], ...]
    """Oldest first; keys open_ms, open, high, low, close, volume."""
    bid: float | None
    ask: float | None
    position_size: float
    """Signed: long positive, short negative, 0 when flat."""
    equity: float | None
    """The total of the symbol's quote currency on its exchange, when a balance was seen."""
    integrity: float
    """The provider's quality score of the series, 0..1 (1 with no open incident)."""
    recent_gaps: int
    connected: bool | None
    """The connector's last reported state; None if no `provider.health` was seen."""
    columns: tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]] = (
        (),
        (),
        (),
        (),
    )
    """High, low, close and volume of `candles`, as columns (what the features read)."""

    @property
    def last_close(self) -> float:
        return self.candles[-1]["close"] if self.candles else 0.0

    @property
    def last_open_ms(self) -> int | None:
        return int(self.candles[-1]["open_ms"]) if self.candles else None

    @property
    def mid(self) -> float:
        """The book's mid price, else the last close."""
        if self.bid is not None and self.ask is not None:
            return (self.bid + self.ask) / 2
        return self.last_close

    @property
    def spread_pct(self) -> float | None:
        """The bid-ask spread in percent of the mid, when a book or ticker was seen."""
        if self.bid is None or self.ask is None or self.bid <= 0:
            return None
        return (self.ask - self.bid) / ((self.ask + self.bid) / 2) * 100


def candle_row(candle: CandleClosed) -> dict[str, float]:
    """Return a closed candle as the row the features read."""
    return {
        "open_ms": float(to_ms(candle.open_time)),
        "open": float(candle.open),
        "high": float(candle.high),
        "low": float(candle.low),
        "close": float(candle.close),
        "volume": float(candle.volume),
    }


class MarketContext:
    """Recent market and account state per series, updated event by event."""

    def __init__(self, keep: int = KEEP, retain: int = RETAIN) -> None:
        self.keep = keep
        self.retain = max(retain, keep)
        self._candles: dict[SeriesKey, list[dict[str, float]]] = {}
        self._opens: dict[SeriesKey, list[float]] = {}
        self._columns: dict[SeriesKey, tuple[list[float], ...]] = {}
        self._quotes: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        self._positions: dict[tuple[str, str], float] = {}
        self._quote_totals: dict[tuple[str, str], float] = {}
        self._gaps: dict[SeriesKey, list[int]] = {}
        self._incidents: dict[SeriesKey, dict[str, float]] = {}
        self._connected: dict[str, bool] = {}
        self._book_ms: dict[tuple[str, str], int] = {}
        self.applied = 0

    def has(self, key: SeriesKey) -> bool:
        """Tell whether the series was warmed (or seen on the bus) at all."""
        return key in self._candles

    def newest_open(self, key: SeriesKey) -> float | None:
        """Return the open time of the series' newest candle, or None if none is held."""
        held = self._candles.get(key)
        return held[-1]["open_ms"] if held else None

    def book_ms(self, exchange: str, symbol: str) -> int | None:
        """Return the time of the newest book read from the bus for a symbol (None: none yet)."""
        return self._book_ms.get((exchange, symbol))

    def series(self) -> list[SeriesKey]:
        """Return every series the context holds."""
        return sorted(self._candles)

    def warm(self, key: SeriesKey, rows: list[dict[str, Any]]) -> int:
        """Load history rows of a series (oldest first); newer candles from the bus win."""
        held = self._candles.setdefault(key, [])
        fresh = [
            {k: float(row[k]) for k in ("open_ms", "open", "high", "low", "close", "volume")}
            for row in rows[-self.retain :]
        ]
        older = [row for row in fresh if not held or row["open_ms"] < held[0]["open_ms"]]
        if older:
            held[:0] = older
            self._opens[key] = [row["open_ms"] for row in held]
            self._columns[key] = tuple([row[c] for row in held] for c in _COLUMNS)
        return len(held)

    def apply(self, payload: Any) -> None:
        """Update the context from one event payload; other types are ignored."""
        self.applied += 1
        if isinstance(payload, CandleClosed):
            self._candle(payload)
        elif isinstance(payload, BookUpdated):
            bid = float(payload.bids[0][0]) if payload.bids else None
            ask = float(payload.asks[0][0]) if payload.asks else None
            self._quotes[(payload.exchange, payload.symbol)] = (bid, ask)
            self._book_ms[(payload.exchange, payload.symbol)] = to_ms(payload.time)
        elif isinstance(payload, TickerUpdated):
            bid = float(payload.bid) if payload.bid is not None else None
            ask = float(payload.ask) if payload.ask is not None else None
            if bid is not None or ask is not None:
                self._quotes[(payload.exchange, payload.symbol)] = (bid, ask)
        elif isinstance(payload, PositionChanged):
            size = float(payload.size)
            signed = -size if payload.side == "short" else size
            self._positions[(payload.exchange, payload.symbol)] = (
                0.0 if payload.side == "flat" else signed
            )
        elif isinstance(payload, BalanceUpdated):
            for currency, balance in payload.balances.items():
                self._quote_totals[(payload.exchange, currency)] = float(balance.total)
        elif isinstance(payload, GapDetected):
            key = (payload.exchange, payload.symbol, payload.timeframe)
            self._gaps.setdefault(key, []).append(to_ms(payload.start))
        elif isinstance(payload, GapRepaired):
            key = (payload.exchange, payload.symbol, payload.timeframe)
            start = to_ms(payload.start)
            self._gaps[key] = [g for g in self._gaps.get(key, []) if g != start]
        elif isinstance(payload, IncidentOpened | IncidentEscalated):
            key = (payload.exchange, payload.symbol, payload.timeframe)
            self._incidents.setdefault(key, {})[payload.incident_id] = payload.quality_score / 100
        elif isinstance(payload, IncidentResolved):
            key = (payload.exchange, payload.symbol, payload.timeframe)
            self._incidents.get(key, {}).pop(payload.incident_id, None)
        elif isinstance(payload, ConnectorHealth):
            self._connected[payload.exchange] = payload.connected
        else:
            self.applied -= 1

    def set_position(self, exchange: str, symbol: str, signed_size: float) -> None:
        """Record a position read over the gateway at warm-up."""
        self._positions[(exchange, symbol)] = signed_size

    def set_quote_total(self, exchange: str, currency: str, total: float) -> None:
        """Record a balance read over the gateway at warm-up."""
        self._quote_totals[(exchange, currency)] = total

    def set_quote(self, exchange: str, symbol: str, bid: float | None, ask: float | None) -> None:
        """Record a top of book read over the gateway at warm-up."""
        self._quotes[(exchange, symbol)] = (bid, ask)

    def snapshot(self, key: SeriesKey, until_ms: int | None = None) -> Snapshot:
        """Return the series' state now (an empty one for a series never seen).

        `until_ms` cuts the candles at that open time (the signal's candle): a context that ran
        ahead of a signal (a replay at full speed) never shows it the future.
        """
        exchange, symbol, timeframe = key
        held = self._candles.get(key, [])
        end = len(held)
        if until_ms is not None and held and held[-1]["open_ms"] > until_ms:
            end = bisect_right(self._opens[key], until_ms)
        start = max(0, end - self.keep)
        candles = tuple(held[start:end])
        cols = self._columns.get(key)
        columns = (
            (cols[0][start:end], cols[1][start:end], cols[2][start:end], cols[3][start:end])
            if cols is not None
            else ((), (), (), ())
        )
        bid, ask = self._quotes.get((exchange, symbol), (None, None))
        quote = symbol.split("/")[1].split(":")[0] if "/" in symbol else "USD"
        incidents = self._incidents.get(key)
        gaps = self._gaps.get(key, ())
        recent = 0
        if gaps and candles:
            horizon = candles[-1]["open_ms"] - GAP_WINDOW * timeframe_ms(timeframe)
            newest = candles[-1]["open_ms"]
            recent = sum(1 for g in gaps if horizon <= g <= newest)
        return Snapshot(
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            candles=candles,
            bid=bid,
            ask=ask,
            position_size=self._positions.get((exchange, symbol), 0.0),
            equity=self._equity(exchange, quote),
            integrity=min(incidents.values()) if incidents else 1.0,
            recent_gaps=recent,
            connected=self._connected.get(exchange),
            columns=columns,
        )

    def _equity(self, exchange: str, quote: str) -> float | None:
        """The quote currency's total on the signal's exchange, else on any account (a paper
        account trades every exchange's symbols)."""
        total = self._quote_totals.get((exchange, quote))
        if total is not None:
            return total
        others = [v for (_, currency), v in self._quote_totals.items() if currency == quote]
        return max(others) if others else None

    def _candle(self, candle: CandleClosed) -> None:
        key = (candle.exchange, candle.symbol, candle.timeframe)
        held = self._candles.setdefault(key, [])
        opens = self._opens.setdefault(key, [])
        row = candle_row(candle)
        if held and row["open_ms"] <= held[-1]["open_ms"]:
            if row["open_ms"] == held[-1]["open_ms"]:
                held[-1] = row  # a corrected candle replaces the one stored
            return
        held.append(row)
        opens.append(row["open_ms"])
        cols = self._columns.setdefault(key, ([], [], [], []))
        for column, name in zip(cols, _COLUMNS, strict=True):
            column.append(row[name])
        if len(held) > 2 * self.retain:  # trim in bulk: amortised O(1) per candle
            del held[: -self.retain]
            del opens[: -self.retain]
            for column in cols:
                del column[: -self.retain]
