"""The catalogue: every event type the system knows, mapped to its payload model."""

from __future__ import annotations

from functools import cache

from barfinex_cli.contracts import advisor, apps, detector, inspector, market, orders
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import UnknownEventType

_MODULES = (market, orders, detector, advisor, inspector, apps)

CATALOG: dict[str, type[Payload]] = {
    model.event_type: model for module in _MODULES for model in module.EVENTS
}


def known_types() -> list[str]:
    """Return every known event type, sorted."""
    return sorted(CATALOG)


def payload_model(event_type: str) -> type[Payload]:
    """Return the model for `event_type`, or raise `UnknownEventType` naming the known ones."""
    try:
        return CATALOG[event_type]
    except KeyError:
        raise UnknownEventType(event_type, known_types()) from None


@cache
def is_known(event_type: str) -> bool:
    """Tell whether `event_type` is in the catalogue."""
    return event_type in CATALOG
