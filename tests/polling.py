"""Waiting for a condition instead of sleeping for a guess: one copy for the whole suite.

`until` polls from a test's event loop (the condition may be a coroutine function: a pane read,
an HTTP call); `wait_until` polls from plain code while subprocesses work. Both fail with an
`AssertionError` naming what was awaited, so a test that times out says what it waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


async def until(
    condition: Callable[[], object],
    within_s: float = 30.0,
    *,
    what: str = "the condition",
    step_s: float = 0.02,
) -> None:
    """Poll `condition` (plain or async) every `step_s` until it is truthy.

    Raises:
        AssertionError: It did not hold within `within_s` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(step_s)


def wait_until(
    condition: Callable[[], object],
    within_s: float = 60.0,
    *,
    what: str = "the condition",
    step_s: float = 0.1,
    ignoring: tuple[type[Exception], ...] = (),
) -> None:
    """Poll `condition` every `step_s` until it is truthy; errors in `ignoring` count as "not yet".

    Raises:
        AssertionError: It did not hold within `within_s` seconds.
    """
    deadline = time.monotonic() + within_s
    while True:
        try:
            if condition():
                return
        except ignoring:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}")
        time.sleep(step_s)
