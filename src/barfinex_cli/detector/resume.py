"""What lets a detector instance stop, crash and start again without losing or doubling a signal.

Two things, both kept on the bus (the one store every instance of a name shares):

- **One run per instance name.** Runs of one name share a consumer group and a consumer name, so
  two of them would each get part of the candles. `InstanceLease` (`runtime.lease`, shared with
  the inspector and the advisor) is a lease on the name: a second run refuses to start, naming
  `--instance`; a run that starts after a crash waits at most `LEASE_S` for the dead run's lease
  to lapse. Re-exported here for the detector's callers.
- **Where the last run stopped publishing.** A candle handled by the last run is acknowledged
  after its signal is published; a run killed between the two leaves the candle pending, and it
  is delivered again. `last_signal_open_ms` reads the `detector.signal` stream backwards (only as
  far back as that candle's event was made) for this instance's newest signal of the symbol, so
  the service publishes nothing for a candle that already has its signal. The in-process bus does
  not outlive its process, so there it finds nothing.

How the service uses them is told in `detector.service`.
"""

from __future__ import annotations

from typing import Any

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.codec import MalformedEvent, decode
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.runtime.lease import LEASE_S, RENEW_S, InstanceLease

__all__ = ["LEASE_S", "RENEW_S", "SCAN_PAGE", "InstanceLease", "last_signal_open_ms"]

SCAN_PAGE = 200
"""Signal stream entries read per round trip when looking for the last published signal."""


async def last_signal_open_ms(bus: Bus, source: str, symbol: str, since_ms: int) -> int | None:
    """Return the candle open time of `source`'s newest `detector.signal` of `symbol`.

    Only entries added from `since_ms` (epoch ms, the bus's clock) on are read: the caller
    passes when the oldest candle it may see again was published. None if none is found, or
    the bus cannot be read backwards (the in-process bus).
    """
    if not isinstance(bus, RedisStreamsBus):
        return None
    key, upper = bus.key(SignalGenerated.event_type), "+"
    lower = f"{max(0, since_ms)}-0"
    while True:
        rows: Any = await bus.redis.xrevrange(key, max=upper, min=lower, count=SCAN_PAGE)
        if not rows:
            return None
        for _entry_id, fields in rows:
            data = next(iter(fields.values()), None) if fields else None
            if data is None:
                continue
            try:
                event = decode(data, SignalGenerated.event_type)
            except MalformedEvent:
                continue
            payload = event.payload
            mine = event.source == source and isinstance(payload, SignalGenerated)
            if mine and payload.symbol == symbol:
                return to_ms(payload.candle_time)
        last = rows[-1][0]
        upper = "(" + (last.decode() if isinstance(last, bytes) else str(last))
