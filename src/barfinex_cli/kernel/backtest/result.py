"""What a backtest produced: fills, round-trip trades, the equity curve and the headline metrics.

Both ways of running a backtest fill these same types: the vectorised detector-only pass
(`vector.py`) and the event-driven pipeline (`engine.py`, signals through the advisor, the
inspector and the paper broker). The CLI renders them, `export.py` writes them, `bfx optimize`
scores trials on `Metrics`, and `bfx paper diff` compares a paper session's fills with them.
Plain frozen dataclasses: they cross process boundaries (optimize workers) by pickling and become
JSON with `dataclasses.asdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import polars as pl

Side = Literal["buy", "sell"]
PositionSide = Literal["long", "short"]
Mode = Literal["detector", "pipeline"]


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one order."""

    order_id: str
    """The client order id (the pipeline derives it from the decision id)."""
    time_ms: int
    """Market time of the fill, epoch ms."""
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    reason: str
    """Why the order was placed: `entry`, `exit`, `stop_loss`, `take_profit`, `close_all`, ..."""
    trace_id: str | None = None
    """The trace the order belongs to (`bfx trace` walks it); None in a detector-only run."""


@dataclass(frozen=True, slots=True)
class Trade:
    """One round trip: a position opened and closed again."""

    symbol: str
    side: PositionSide
    entry_ms: int
    exit_ms: int
    quantity: float
    entry_price: float
    exit_price: float
    fees: float
    pnl: float
    """Net of fees, in quote currency."""
    return_pct: float
    """`pnl` over the entry notional, in percent."""
    exit_reason: str
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Account equity (cash plus open positions marked to the close) at a candle's close."""

    time_ms: int
    equity: float


@dataclass(frozen=True, slots=True, eq=False)
class EquityCurve:
    """The equity curve as two numpy columns: what a run of a million candles keeps cheaply.

    One `EquityPoint` object per candle costs about a second per million candles; the
    vectorised path fills this instead and leaves `BacktestResult.equity` empty unless asked.
    `points()` turns it into `EquityPoint`s when a caller wants them.
    """

    time_ms: npt.NDArray[np.int64]
    """The candle's open time, epoch ms (the equity is at that candle's close)."""
    equity: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.time_ms)

    def points(self) -> tuple[EquityPoint, ...]:
        """Return the curve as `EquityPoint`s (slow on long curves: one object per candle)."""
        return tuple(map(EquityPoint, self.time_ms.tolist(), self.equity.tolist()))


@dataclass(frozen=True, slots=True)
class Metrics:
    """The headline figures of a run; ratios are plain fractions unless a name says `pct`."""

    total_return_pct: float
    cagr_pct: float
    sharpe: float
    sortino: float
    max_drawdown_pct: float
    win_rate_pct: float
    profit_factor: float
    """Gross profit over gross loss; `inf` with no losing trade, 0 with no trade."""
    exposure_pct: float
    """Share of candles with a position open."""
    trades: int
    fees: float


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """One backtest run, whole."""

    run_id: str
    mode: Mode
    strategy: str
    exchange: str
    symbols: tuple[str, ...]
    timeframe: str
    start_ms: int
    end_ms: int
    bars: int
    initial_equity: float
    signals: int
    metrics: Metrics
    fills: tuple[Fill, ...] = ()
    trades: tuple[Trade, ...] = ()
    equity: tuple[EquityPoint, ...] = ()
    blocked: dict[str, int] = field(default_factory=dict)
    """Signals or decisions that led to no order, by `stage:policy` (pipeline runs only)."""
    params: dict[str, float | int | str] = field(default_factory=dict)
    """Strategy parameters the run used (`bfx optimize` trials)."""
    curve: EquityCurve | None = None
    """The whole equity curve as arrays (the vectorised path fills it; `equity` may be empty)."""
    unfilled: int = 0
    """Signals on the last candle: no next open to fill them at (detector-only runs)."""
    fills_table: pl.DataFrame | None = None
    """`fills` as one polars frame, a column per `Fill` field (the vectorised path fills it;
    `fills` may then be empty: a run can skip building one object per fill)."""
    trades_table: pl.DataFrame | None = None
    """`trades` as one polars frame, a column per `Trade` field (as `fills_table`)."""
    broken: dict[str, str] = field(default_factory=dict)
    """Rules that could not be evaluated on the data (they never held), with the reason."""
