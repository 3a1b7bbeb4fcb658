"""Run a service until SIGINT or SIGTERM, then stop it gracefully.

The first signal sets the stop event: consumers finish the event in hand, acknowledge what they
handled and leave the rest pending. A second signal cancels outright.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run `main(stop)`; the first SIGINT/SIGTERM sets `stop`, the second cancels `main`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.ensure_future(main(stop))

    def on_signal() -> None:
        if stop.is_set():
            task.cancel()
        else:
            stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        return await task
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_role(
    run: Callable[[asyncio.Event], Awaitable[T]],
    ready: asyncio.Event,
    on_ready: Callable[[], None],
) -> T:
    """Run a role's `run(stop)` until a signal; call `on_ready` once its `ready` event is set."""

    async def main(stop: asyncio.Event) -> T:
        task = asyncio.ensure_future(run(stop))
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            on_ready()
        waiter.cancel()
        return await task

    return await run_until_signalled(main)
