"""Ride out a Redis outage: every bus call retries with capped, jittered backoff, up to a limit.

A dropped connection or a restarted Redis is a pause, not the end of a role. Each call of the
Redis bus (publish, fetch, ack, tail reads, dedup checks) goes through `Outage.call`, which
retries connection failures with full-jitter exponential backoff (tenacity) until Redis answers
again. One `Outage` is shared by all calls of a bus, so the outage is measured from its first
failed call, is logged once when it starts and once when it ends (not per retry), and is visible
to the roles as `degraded` / `since` for their health. Only a Redis that stays unreachable longer
than `limit_s` (the setting `redis_outage_s`) ends the call, with a `RedisUnreachable` that says
how long it waited.

A role that is stopping does not wait for Redis (`stop_waiting`): a failed call gives up at once
and the calls already waiting for Redis are cut, and a call Redis neither answers nor fails (a
hung server) is cut after `stop_grace_s`, so Ctrl-C ends a role in seconds during an outage.
Cutting a call leaves Redis as a crash at that point would: what the role could not acknowledge
stays pending and is delivered again on its next start.

redis-py's own retry is switched off on the bus's client (`no_retry`): it would retry blindly,
including a batch of XADDs that Redis may already have applied, and hide the outage from us.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from barfinex_cli.errors import RedisUnreachable

log = logging.getLogger("bfx.bus")

T = TypeVar("T")

TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
"""Failures that mean 'Redis is not answering right now' (a loading Redis is a ConnectionError)."""


def no_retry() -> Retry:
    """Return the retry policy given to redis-py: none, so `Outage` sees every failure."""
    return Retry(NoBackoff(), 0)


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (redis-py adds multi-line detail)."""
    return str(exc).split("\n")[0] or type(exc).__name__


class Outage:
    """Whether one bus's Redis is unreachable now, since when, and the retry policy for calls.

    Args:
        url: The Redis URL, for the log lines and the final error.
        limit_s: How long an outage may last before a call gives up (`redis_outage_s`).
        backoff_s: The scale of the first waits; they double per failure, with full jitter.
        max_backoff_s: The cap on one wait between attempts.
        stop_grace_s: Once stopping, how long a call may wait for a Redis that neither answers
            nor fails (a hung server) before it is cut.
    """

    def __init__(
        self,
        url: str,
        limit_s: float,
        *,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        stop_grace_s: float = 3.0,
    ) -> None:
        self.url = url
        self._answered_at = float("-inf")  # monotonic end of the latest outage
        self.limit_s = limit_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.outages = 0
        """How many outages this bus has ridden out (or is in)."""
        self._since: float | None = None  # monotonic start of the current outage
        self.since: datetime | None = None
        """When the current outage began (UTC), or None while Redis answers."""
        self.last: tuple[datetime, float] | None = None
        """The latest outage that ended: when it began (UTC) and how long it lasted (s)."""
        self.stop_grace_s = stop_grace_s
        self.stopping = False
        """Set by `stop_waiting`: calls no longer ride out an outage."""
        self._unanswered = False  # a stopping call got no answer within the grace: Redis hangs
        # tasks inside `call`: nesting depth, and when their outermost call began (monotonic)
        self._calls: dict[asyncio.Task[object], tuple[int, float]] = {}
        self._cut: set[asyncio.Task[object]] = set()  # tasks `stop_waiting` cancelled

    @property
    def degraded(self) -> bool:
        """Tell whether Redis is unreachable right now (calls are waiting for it)."""
        return self._since is not None

    @property
    def gave_up(self) -> bool:
        """Tell whether a stopping role has stopped waiting for Redis (it failed or hung).

        Its other calls to Redis (a lease's release) are then not worth making either.
        """
        return self.stopping and (self.degraded or self._unanswered)

    def elapsed_s(self) -> float:
        """Return how long the current outage has lasted (0 while Redis answers)."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    def stop_waiting(self) -> None:
        """Stop riding out outages: the role is stopping, and its stop must not wait for Redis.

        From now on a call that fails gives up at once (and cuts every call waiting for Redis),
        a call made while Redis is unreachable gives up without trying, and if Redis is
        unreachable now the calls waiting for it are cut. A call Redis neither answers nor
        fails is cut after `stop_grace_s`. Calls Redis answers go on as before, so a stop with
        Redis up still acknowledges what its role handled.
        """
        if self.stopping:
            return
        self.stopping = True
        if self.degraded:
            self._cut_waiting()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: no call can be in flight
            return
        loop.call_later(self.stop_grace_s, self._cut_waiting, time.monotonic())

    def _cut_waiting(self, began_by: float = float("inf")) -> None:
        """Cancel the calls in flight since `began_by` or before (not the caller's own).

        Each raises `RedisUnreachable` in its caller.
        """
        me = asyncio.current_task()
        for task, (_, began) in self._calls.items():
            if began <= began_by and task is not me and task not in self._cut:
                self._cut.add(task)
                task.cancel()

    def _gave_up(self) -> RedisUnreachable:
        if self.degraded:
            reason = f"gave up waiting for it after {self.elapsed_s():.1f} s"
        elif self._unanswered:
            reason = f"no answer within {self.stop_grace_s:g} s"
        else:
            reason = "a call failed"
        return RedisUnreachable(self.url, f"stopping; {reason}")

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_failure: Callable[[], None] | None = None,
    ) -> T:
        """Return `await fn()`, calling it again after each connection failure.

        `fn` must be safe to call again after a failure at any point (the callers make it so);
        `on_failure` runs after each failure, before the wait, to reset what the retry needs.
        Raise `RedisUnreachable` once the outage has lasted longer than `limit_s`, or at once
        when a stopping role meets it (`stop_waiting`).
        """
        if self.gave_up:
            raise self._gave_up()
        task: asyncio.Task[object] | None = asyncio.current_task()
        if task is None:  # not in a task (never under asyncio.run): nothing to cut
            return await self._bounded(fn, on_failure)
        depth, began = self._calls.get(task, (0, time.monotonic()))
        self._calls[task] = (depth + 1, began)
        try:
            return await self._bounded(fn, on_failure)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            self._cut.discard(task)
            if task.uncancel() > 0:  # cancelled by someone else too: let that through
                raise
            self._unanswered = self._unanswered or not self.degraded
            raise self._gave_up() from None
        finally:
            if depth:
                self._calls[task] = (depth, began)
            else:
                del self._calls[task]

    async def _bounded(
        self, fn: Callable[[], Awaitable[T]], on_failure: Callable[[], None] | None
    ) -> T:
        """Run the call; once stopping, for `stop_grace_s` at most (a hung Redis never fails)."""
        if not self.stopping:
            return await self._call(fn, on_failure)
        try:
            async with asyncio.timeout(self.stop_grace_s):
                return await self._call(fn, on_failure)
        except TimeoutError:  # the grace ran out (a failure inside is RedisUnreachable)
            self._unanswered = True
            raise self._gave_up() from None

    async def _call(
        self, fn: Callable[[], Awaitable[T]], on_failure: Callable[[], None] | None
    ) -> T:
        began = 0.0  # when the current attempt began (monotonic)

        async def attempt_fn() -> T:
            nonlocal began
            began = time.monotonic()
            return await fn()

        def transient(exc: BaseException) -> bool:
            if not isinstance(exc, TRANSIENT):
                return False
            self._failed(exc, began)
            if on_failure is not None:
                on_failure()
            if self.stopping:  # Redis is failing a stopping role: stop waiting for it anywhere
                self._cut_waiting()
            return True

        def out_of_time(_: RetryCallState) -> bool:
            return self.stopping or self.elapsed_s() >= self.limit_s

        retrying = AsyncRetrying(
            retry=retry_if_exception(transient),
            wait=wait_random_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            stop=out_of_time,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await attempt_fn()
        except TRANSIENT as exc:
            if self.stopping:
                raise self._gave_up() from None
            raise RedisUnreachable(
                self.url,
                f"no answer for {self.elapsed_s():.1f} s, longer than redis_outage_s="
                f"{self.limit_s:g}: {first_line(exc)}",
            ) from None
        self._answered()
        return result

    def _failed(self, exc: BaseException, began: float) -> None:
        """Start an outage, unless one is on or the failed attempt began before the last ended.

        Calls run concurrently: an attempt sent while Redis was away can fail after another
        call has seen Redis answer again. That failure belongs to the outage that just ended;
        counting it as a new one made one restart look like several.
        """
        if self._since is not None or began < self._answered_at:
            return
        self._since = time.monotonic()
        self.since = datetime.now(UTC)
        self.outages += 1
        log.warning(
            "Redis unreachable; retrying with backoff",
            extra={"url": self.url, "error": first_line(exc), "give_up_after_s": self.limit_s},
        )

    def _answered(self) -> None:
        if self._since is None:
            return
        lasted = self.elapsed_s()
        self._answered_at = time.monotonic()
        if self.since is not None:
            self.last = (self.since, lasted)
        self._since = None
        self.since = None
        log.info("Redis answers again", extra={"url": self.url, "after_s": round(lasted, 3)})
