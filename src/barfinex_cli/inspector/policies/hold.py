"""Max hold time: runtime-managed positions held longer than `hold.max_hold_minutes` are closed.

Not an evaluator of intents: the service asks, on its clock, which positions have outlived their
limit and closes them as it closes any other. Legacy positions (found at start, not opened by the
inspector) are never touched; they are only alerted on. The limit is per symbol and strategy, so
an override can let a slow strategy hold for days while the default closes within hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from barfinex_cli.inspector.model import Position
from barfinex_cli.inspector.policies.config import Limits


def expired(
    positions: Iterable[Position],
    now: datetime,
    limits_for: Callable[[str, str], Limits],
) -> list[Position]:
    """Return the runtime-managed positions open longer than their `max_hold_minutes`."""
    out: list[Position] = []
    for position in positions:
        if not position.runtime:
            continue
        minutes = limits_for(position.symbol, position.strategy).hold.max_hold_minutes
        if minutes is not None and now - position.opened_at >= timedelta(minutes=minutes):
            out.append(position)
    return out
