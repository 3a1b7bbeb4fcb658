"""Stop-losses and take-profits the venue cannot hold, emulated by the inspector on price updates.

Where each guard of a runtime position lives is decided per venue, from what the provider's broker
says it holds (`GET /api/v1/broker`, read at start) and the `execution.protective` policy key:

| venue | stop-loss | take-profit |
|---|---|---|
| paper broker (live paper trading, and every replay with `--paper`) | held | held |
| ccxt exchange with trigger/stop-market orders and reduce-only | held | held |
| ccxt exchange with reduce-only but no trigger orders | emulated | held |
| ccxt exchange without reduce-only (most spot venues) | emulated | emulated |
| any venue under `protective = "emulate"` | emulated | emulated |

A guard must be reduce-only to rest at the venue: an order that outlives its position (the
position closed by its sibling, by hand, by a CLOSE_ALL) must not open a new one there.

An emulated guard is watched on every closed candle (its low and high) and ticker (its last
price) of the symbol: the stop fires when the price reaches it (at or below for a long, at or
above for a short), the take-profit likewise on the other side; when one candle reaches both,
the stop fires (the worse outcome is assumed, as a venue could not tell either). Firing sends a
market close under the position's close id (`i-<decision>-x<gen>`), which the provider keeps
once: a second trigger, a restart or a CLOSE_ALL can never close twice. Pure; `guard` acts.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from barfinex_cli.contracts.inspector import ProtectiveKind
from barfinex_cli.contracts.rest import BrokerCapabilities
from barfinex_cli.store.inspector import PositionRecord

Mode = Literal["auto", "emulate"]
Guarded = Literal["stop_loss", "take_profit"]
"""The guards that can be emulated (a trailing stop is the stop, moved)."""
GUARDS: tuple[Guarded, ...] = ("stop_loss", "take_profit")


def held_by_venue(kind: ProtectiveKind, venue: BrokerCapabilities | None, mode: Mode) -> bool:
    """Tell whether a guard of `kind` rests at the venue (True) or is emulated (False).

    `venue` None means the provider did not say (a gateway without `/broker`): the guard is
    sent to the venue as before, and a refusal alerts.
    """
    if mode == "emulate":
        return False
    if venue is None:
        return True
    if kind == "take_profit":
        return venue.reduce_only
    return venue.stop_orders and venue.reduce_only


def describe(venue: BrokerCapabilities | None, mode: Mode) -> dict[str, str]:
    """Return where each guard lives under `venue` and `mode` ("venue" or "emulated")."""
    return {kind: "venue" if held_by_venue(kind, venue, mode) else "emulated" for kind in GUARDS}


@dataclass(frozen=True, slots=True)
class Touch:
    """An emulated guard the price reached: which, at what level, and what showed it."""

    kind: Guarded
    level: Decimal
    reason: str


def touched(
    position: PositionRecord,
    low: Decimal,
    high: Decimal,
    emulated: Collection[Guarded],
    seen: str,
) -> Touch | None:
    """Return the emulated guard of `position` that prices `low..high` reached, or None.

    `seen` names the update for the reason (`candle`, `ticker`). The stop is checked first.
    """
    long = position.side == "long"
    stop, take = position.stop, position.take_profit
    if "stop_loss" in emulated and stop is not None:
        price = low if long else high
        if (long and low <= stop) or (not long and high >= stop):
            return Touch("stop_loss", stop, f"emulated: {seen} at {price} reached the stop {stop}")
    if "take_profit" in emulated and take is not None:
        price = high if long else low
        if (long and high >= take) or (not long and low <= take):
            reason = f"emulated: {seen} at {price} reached the take-profit {take}"
            return Touch("take_profit", take, reason)
    return None
