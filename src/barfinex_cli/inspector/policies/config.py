"""The policy file's schema: every key, its default and its bounds, checked before anything trades.

A policy file is TOML. Its top-level sections set the defaults; `[symbols."BTC/USDT".<section>]`
and `[strategies.<name>.<section>]` override single keys of the *per-trade* sections (`size`,
`risk`, `market`, `cooldown`, `hold`, `windows`, `execution`) for one symbol or one strategy.
Portfolio-wide sections (`exposure`, `correlation`, `drawdown`, `activity`, `assets`) describe
the whole account and cannot be overridden; an override that tries is an unknown key, and the
loader says so.

A limit left out is off (the policy always allows), except `risk.per_trade_pct`, which every
entry needs to be sized. Percentages are of equity, 0-100; money is in the account's quote
currency. Every model is frozen with `extra="forbid"`, so a misspelt key fails the load instead
of silently meaning nothing. Every number is finite and bounded (`MAX_MINUTES`, `MAX_MONEY`,
`MAX_BPS`, `MAX_COUNT`...): a value such as `inf` or `1e308` minutes would load and then
overflow the time arithmetic when a policy is evaluated, so it is refused at load time instead.
"""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r} (use an IANA name such as 'UTC' or 'Europe/London')"
        ) from None
    return name


MAX_MINUTES = 366 * 24 * 60
"""The longest any minutes key may be: a year (a leap one)."""
MAX_MONEY = Decimal(10) ** 15
"""The largest amount of money (or lot step) in the account's quote currency."""
MAX_BPS = 10_000.0
"""Basis points up to 100%: a wider tolerance means no limit; leave the key out instead."""
MAX_COUNT = 1_000_000
"""The largest count (trades a day, losses in a row, positions in a group)."""
MAX_NET_PCT = Decimal(100_000)
"""Net exposure up to 1,000 times equity."""
MAX_LEVERAGE = Decimal(1_000)

TzName = Annotated[str, AfterValidator(_zone)]
Pct = Annotated[Decimal, Field(gt=0, le=100, allow_inf_nan=False)]
Money = Annotated[Decimal, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
Minutes = Annotated[float, Field(gt=0, le=MAX_MINUTES, allow_inf_nan=False)]
Bps = Annotated[float, Field(gt=0, le=MAX_BPS, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]


class Section(BaseModel):
    """A frozen table of the policy file that rejects keys it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SizeLimits(Section):
    """`[size]`: bounds on one order's notional (amount times entry price)."""

    max_notional: Money | None = None
    max_equity_pct: Pct | None = None
    min_notional: Annotated[Decimal, Field(ge=0, le=MAX_MONEY, allow_inf_nan=False)] = Decimal(0)
    step: Money | None = None
    """Lot step the size is rounded down to (the venue's amount precision), if given."""

    @model_validator(mode="after")
    def _min_below_max(self) -> SizeLimits:
        if self.max_notional is not None and self.min_notional > self.max_notional:
            raise ValueError(
                f"min_notional {self.min_notional} is above max_notional {self.max_notional}"
            )
        return self


class RiskLimits(Section):
    """`[risk]`: how much equity one trade may lose if its stop is hit."""

    per_trade_pct: Pct = Decimal(1)


class MarketLimits(Section):
    """`[market]`: the spread and slippage an entry tolerates, in basis points."""

    max_spread_bps: Bps | None = None
    max_slippage_bps: Bps | None = None


class CooldownLimits(Section):
    """`[cooldown]`: no new entries for a while after a losing trade or a stop-out."""

    after_loss_minutes: Minutes | None = None


class HoldLimits(Section):
    """`[hold]`: how long a runtime-managed position stays open before the inspector closes it."""

    max_hold_minutes: Minutes | None = None


class ExecutionLimits(Section):
    """`[execution]`: where protective orders live, and when a close waits for a better book."""

    protective: Literal["auto", "emulate"] = "auto"
    """`auto`: orders the venue holds where it can hold them (GET /broker), emulated on price
    updates where it cannot; `emulate`: always emulated, nothing rests at the venue."""
    max_close_spread_bps: Bps | None = None
    """A close the inspector sends waits while the spread is wider than this."""
    min_close_depth: Money | None = None
    """... or while the top level it would sell into (buy from) is worth less than this."""
    max_close_defer_minutes: Minutes = 5.0
    """The longest a close waits; then it is sent anyway and an alert says so."""


class Window(Section):
    """One `[[windows.allow]]` entry: weekdays and a time-of-day range in the windows' timezone.

    `end` before `start` crosses midnight (the weekday is the day the window opens); `end`
    equal to `start` is refused because it is ambiguous.
    """

    days: tuple[Weekday, ...] = WEEKDAYS
    start: time
    end: time

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: give a window of some length")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("give local times without an offset; set [windows] timezone instead")
        if not self.days:
            raise ValueError("days is empty: list at least one weekday")
        return self


class WindowLimits(Section):
    """`[windows]`: entries only inside one of the `allow` windows; none listed means always."""

    timezone: TzName | None = None
    """IANA zone of the windows; the file's top-level `timezone` when left out."""
    allow: tuple[Window, ...] = ()


class ExposureLimits(Section):
    """`[exposure]`: the whole book against equity, after the new order."""

    max_net_pct: Annotated[Decimal, Field(gt=0, le=MAX_NET_PCT, allow_inf_nan=False)] | None = None
    """|long notional - short notional| over equity, in percent (above 100 on margin)."""
    max_leverage: Annotated[Decimal, Field(gt=0, le=MAX_LEVERAGE, allow_inf_nan=False)] | None = (
        None
    )
    """Gross notional of positions, open orders and the new order over equity."""


class Group(Section):
    """One correlated group: at most `max_open` of its symbols hold a position at once."""

    symbols: tuple[str, ...] = Field(min_length=2)
    max_open: Count


class CorrelationLimits(Section):
    """`[correlation.groups.<name>]`: symbols that move together, capped as a group."""

    groups: dict[str, Group] = {}


Breach = Literal["CLOSE_ALL", "STAND_DOWN"]


class DrawdownLimits(Section):
    """`[drawdown]`: loss limits for the day and from the equity peak, and a daily profit cap."""

    daily_loss_pct: Pct | None = None
    on_daily_loss: Breach = "STAND_DOWN"
    from_peak_pct: Pct | None = None
    on_peak: Breach = "CLOSE_ALL"
    daily_profit_cap_pct: Pct | None = None
    stand_down_minutes: Minutes | None = None
    """How long a drawdown STAND_DOWN lasts; left out: the daily limits hold to the next trading
    day and the peak limit until `bfx inspector resume`."""


class ActivityLimits(Section):
    """`[activity]`: how often the account trades and how much losing it accepts in a row."""

    max_trades_per_day: Count | None = None
    max_losing_trades_per_day: Count | None = None
    max_loss_streak: Count | None = None
    loss_streak_stand_down_minutes: Minutes = 60.0


class AssetLimits(Section):
    """`[assets]`: symbols never entered (closing what is held stays allowed)."""

    excluded: frozenset[str] = frozenset()


class Limits(Section):
    """The per-trade sections: the defaults, or the defaults under one symbol/strategy override."""

    size: SizeLimits = SizeLimits()
    risk: RiskLimits = RiskLimits()
    market: MarketLimits = MarketLimits()
    cooldown: CooldownLimits = CooldownLimits()
    hold: HoldLimits = HoldLimits()
    windows: WindowLimits = WindowLimits()
    execution: ExecutionLimits = ExecutionLimits()


OVERRIDABLE: tuple[str, ...] = tuple(Limits.model_fields)


class Override(Section):
    """`[symbols.X]` or `[strategies.X]`: keys of the per-trade sections to replace.

    Kept as plain tables here; the loader merges each over the defaults and validates the result,
    so a bad value is reported at its full key (`symbols.BTC/USDT.size.max_notional`).
    """

    size: dict[str, Any] | None = None
    risk: dict[str, Any] | None = None
    market: dict[str, Any] | None = None
    cooldown: dict[str, Any] | None = None
    hold: dict[str, Any] | None = None
    windows: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None


class PolicyFile(Limits):
    """A whole policy file as written."""

    timezone: TzName = "UTC"
    """The zone whose midnight starts a trading day (daily counters and daily limits)."""
    exposure: ExposureLimits = ExposureLimits()
    correlation: CorrelationLimits = CorrelationLimits()
    drawdown: DrawdownLimits = DrawdownLimits()
    activity: ActivityLimits = ActivityLimits()
    assets: AssetLimits = AssetLimits()
    symbols: dict[str, Override] = {}
    strategies: dict[str, Override] = {}
