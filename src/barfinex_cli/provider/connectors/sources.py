"""History sources for the healer: which connector can backfill a series of a given exchange.

The healer (`market.integrity.healing`) works with anything that serves closed candles; this
module knows the concrete connectors, so it lives with them in the provider.
"""

from __future__ import annotations

from barfinex_cli.errors import BfxError, UsageError
from barfinex_cli.provider.connectors.base import MarketConnector
from barfinex_cli.runtime.settings import Settings
from barfinex_cli.store.market import MarketStore


def history_source_for(exchange: str, settings: Settings) -> MarketConnector | None:
    """Return a history source for `exchange`, or None if no connector for it is installed.

    `synthetic` is the bundled synthetic market, regenerated to cover the stored synthetic
    series (same default seed as `bfx data synth`; a different seed is caught by the context
    check). Any other name is a ccxt exchange; it is not contacted here.
    """
    if exchange == "synthetic":
        try:
            from barfinex_cli.provider.connectors.replay import ReplayConfig, ReplayConnector
        except ImportError:
            return None
        with MarketStore(settings.home / "market.db") as store:
            held = [s for s in store.series() if s.exchange == "synthetic"]
        if not held:
            return ReplayConnector(ReplayConfig(start_ms=2**53))
        first = min(s.first_ms for s in held)
        last = max(s.last_ms for s in held)
        config = ReplayConfig(
            symbols=tuple(sorted({s.symbol for s in held})),
            synthetic_start_ms=first,
            days=((last - first) // 60_000 + 1.5) / 1_440,  # whole minutes survive the float
            start_ms=last + 60_000,
        )
        return ReplayConnector(config)
    try:
        from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector
    except ImportError:
        return None
    try:
        return CcxtConnector(exchange)
    except BfxError as exc:
        raise UsageError(f"cannot backfill from {exchange!r}: {exc}") from None
