"""Start one role as this process's service: build a kernel, build the role, run until a signal.

Every role command of the CLI (`bfx provider start`, `bfx detector run`, `bfx events record`)
starts through `serve`, so they open, announce, stop and close alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.runtime.lifecycle import run_until_signalled
from barfinex_cli.runtime.settings import Settings

T = TypeVar("T")


class Role(Protocol[T]):  # type: ignore[misc]
    """What a role offers the launcher: a readiness event and a `run(stop)` coroutine."""

    ready: asyncio.Event

    def run(self, stop: asyncio.Event) -> Awaitable[T]: ...


R = TypeVar("R", bound=Role)  # type: ignore[type-arg]


async def serve(
    settings: Settings,
    build: Callable[[Kernel], Awaitable[R]],
    on_ready: Callable[[R], None] | None = None,
) -> tuple[R, object]:
    """Build a role on a fresh kernel and run it until SIGINT/SIGTERM; return it and its result.

    `on_ready` is called once the role says it is ready (to print where it listens). Once the
    stop is asked, the bus no longer waits out a Redis outage (`Kernel.stop_waiting`), so a
    role stops in seconds with Redis gone, leaving what it had not acknowledged pending.
    """

    async def main(stop: asyncio.Event) -> tuple[R, object]:
        async with Kernel(settings) as kernel:
            stopping = asyncio.ensure_future(_stop_waiting(stop, kernel))
            try:
                role = await build(kernel)
                task = asyncio.ensure_future(role.run(stop))
                waiter = asyncio.ensure_future(role.ready.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if role.ready.is_set() and on_ready is not None:
                    on_ready(role)
                waiter.cancel()
                return role, await task
            finally:
                stopping.cancel()

    return await run_until_signalled(main)


async def _stop_waiting(stop: asyncio.Event, kernel: Kernel) -> None:
    await stop.wait()
    kernel.stop_waiting()
