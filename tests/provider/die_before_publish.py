"""Run `bfx` with a provider that dies, as a SIGKILL leaves it, just before it publishes an order.

Test-only fault injection for `test_service_kill.py`: the provider runtime's flush is wrapped so
that the first flush holding an `order.*` event ends the process at once with `os._exit(137)` —
after the paper broker committed the order, its fill and their events to paper.db, before any of
them reached the bus. Everything else is the real `bfx`: `python die_before_publish.py ARGS` is
`bfx ARGS`.
"""

from __future__ import annotations

import os

from barfinex_cli.cli.main import run
from barfinex_cli.provider import service

_flush = service.ProviderRuntime.flush


async def _dying_flush(self: service.ProviderRuntime) -> None:
    if any(event.type.startswith("order.") for event in self.outbox):
        os._exit(137)  # no cleanup, no flush, no atexit: what SIGKILL leaves
    await _flush(self)


if __name__ == "__main__":
    service.ProviderRuntime.flush = _dying_flush  # type: ignore[method-assign]
    run()
