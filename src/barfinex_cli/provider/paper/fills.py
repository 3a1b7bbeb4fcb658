"""Fill arithmetic of the paper broker: its config, slippage, fees, book walks and candle tests.

Pure functions over `Decimal`, with no state and no IO, so that every price the paper broker fills
at can be checked by hand against `docs/paper.md`. The broker (`broker.py`) decides *when* to fill;
this module says *at what price* and *how much*.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from barfinex_cli.contracts.orders import OrderSide
from barfinex_cli.store.market import CandleRow

BPS = Decimal(10_000)
ZERO = Decimal(0)

MAX_AMOUNT = Decimal(10) ** 15
"""The largest order amount the broker accepts."""
MAX_PRICE = Decimal(10) ** 15
"""The largest price (limit, stop, trade, candle, book level) the broker accepts."""
MAX_VOLUME = Decimal(10) ** 24
"""The largest candle volume or book level amount it accepts (meme coins trade in 10^12s)."""
MAX_NOTIONAL = Decimal(10) ** 18
"""The largest order value (amount x its reference price) and opening balance it accepts."""
CONTEXT = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
"""The decimal context of all broker arithmetic (`decimal.localcontext(CONTEXT)`).

Python's default 28 digits cannot quantize a notional of 10^20 to the 1e-8 money step (it
raises); 60 digits hold any product of the bounds above with room for a lifetime of fills.
"""

Liquidity = Literal["maker", "taker"]
Level = tuple[Decimal, Decimal]
"""One book level as `(price, amount)`."""


class PaperConfig(BaseModel):
    """The numbers of the simulation; frozen, validated before the broker starts."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    maker_fee_bps: Decimal = Field(default=Decimal(2), ge=0)
    taker_fee_bps: Decimal = Field(default=Decimal(5), ge=0)
    slippage_bps: Decimal = Field(default=Decimal(1), ge=0)
    max_participation: Decimal | None = Field(default=Decimal("0.1"), gt=0, le=1)
    """The share of one candle's volume a single order may take per candle; None for no cap."""
    drive_timeframe: str = "1m"
    """Only candles of this timeframe match resting orders; others are ignored."""
    price_step: Decimal = Field(default=Decimal("0.00000001"), gt=0)
    amount_step: Decimal = Field(default=Decimal("0.00000001"), gt=0)
    money_step: Decimal = Field(default=Decimal("0.00000001"), gt=0)

    def price(self, value: Decimal) -> Decimal:
        """Round a price to the price step (half-even)."""
        return value.quantize(self.price_step, ROUND_HALF_EVEN)

    def amount(self, value: Decimal) -> Decimal:
        """Round an amount down to the amount step, so a cap is never exceeded."""
        return value.quantize(self.amount_step, ROUND_DOWN)

    def money(self, value: Decimal) -> Decimal:
        """Round a quote-currency sum (fee, PnL, balance) to the money step (half-even)."""
        return value.quantize(self.money_step, ROUND_HALF_EVEN)

    def fee(self, notional: Decimal, liquidity: Liquidity) -> Decimal:
        """Return the fee on `notional` at the maker or taker rate."""
        bps = self.maker_fee_bps if liquidity == "maker" else self.taker_fee_bps
        return self.money(notional * bps / BPS)

    def slipped(self, price: Decimal, side: OrderSide) -> Decimal:
        """Return `price` moved against the taker by the slippage: up for a buy, down for a sell."""
        factor = self.slippage_bps / BPS
        return self.price(price * (1 + factor) if side == "buy" else price * (1 - factor))

    def cap(self, volume: Decimal | None) -> Decimal | None:
        """Return the most one order may fill against a candle of `volume`; None for no cap."""
        if self.max_participation is None or volume is None:
            return None
        return self.amount(volume * self.max_participation)


class Bar(NamedTuple):
    """A closed candle in exact decimals."""

    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @classmethod
    def from_row(cls, row: CandleRow) -> Bar:
        """Convert a stored candle (floats) without binary-float digits leaking in."""
        return cls(*(to_decimal(v) for v in (row.open, row.high, row.low, row.close, row.volume)))


def to_decimal(value: float | int | Decimal) -> Decimal:
    """Return `value` as a Decimal; a float goes through its shortest repr (0.1 -> 0.1)."""
    result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def crossed(side: OrderSide, stop: Decimal, price: Decimal) -> bool:
    """Return whether `price` is at or beyond a stop: above it for a buy, below for a sell."""
    return price >= stop if side == "buy" else price <= stop


def stop_trigger(side: OrderSide, stop: Decimal, bar: Bar) -> Decimal | None:
    """Return the price a stop triggers at within `bar`, or None if it does not.

    A candle that opens beyond the stop gapped through it: the trigger price is the open.
    """
    if crossed(side, stop, bar.open):
        return bar.open
    extreme = bar.high if side == "buy" else bar.low
    return stop if crossed(side, stop, extreme) else None


def touched(side: OrderSide, limit: Decimal, bar: Bar) -> bool:
    """Return whether a resting limit is reached: the low for a buy, the high for a sell."""
    return bar.low <= limit if side == "buy" else bar.high >= limit


def marketable(side: OrderSide, limit: Decimal, price: Decimal) -> bool:
    """Return whether a limit would trade at once against `price` (the ask for a buy)."""
    return limit >= price if side == "buy" else limit <= price


def better(side: OrderSide, a: Decimal, b: Decimal) -> Decimal:
    """Return the better of two prices for the taker: the lower for a buy, the higher for a sell."""
    return min(a, b) if side == "buy" else max(a, b)


def walk_book(
    levels: Sequence[Level], side: OrderSide, amount: Decimal, limit: Decimal | None
) -> tuple[list[Level], list[Level]]:
    """Take up to `amount` from the opposite side's levels (best first), never beyond `limit`.

    Returns:
        The `(level price, amount taken)` pairs in order, and the levels left afterwards.
    """
    taken: list[Level] = []
    left: list[Level] = []
    remaining = amount
    for price, size in levels:
        if remaining <= 0 or (limit is not None and not marketable(side, limit, price)):
            left.append((price, size))
            continue
        take = min(size, remaining)
        taken.append((price, take))
        remaining -= take
        if size > take:
            left.append((price, size - take))
    return taken, left
