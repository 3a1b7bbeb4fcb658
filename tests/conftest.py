"""Fixtures shared by the whole suite: real Redis with a unique namespace, and both buses."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

REDIS_URL = os.environ.get("BFX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

Kernels = Callable[[Any], Awaitable[Any]]
"""The `kernels` fixture: `await kernels(settings)` is an open kernel, closed after the test."""


@pytest.fixture(autouse=True)
def _fresh_bfx_logging() -> Iterator[None]:
    """Undo what a command run in-process did to the `bfx` loggers, so no test sees another's."""
    import logging

    yield
    root = logging.getLogger("bfx")
    root.handlers.clear()
    root.propagate = True
    root.setLevel(logging.NOTSET)


@pytest.fixture
def namespace() -> str:
    """Return a namespace no other test uses, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_bus(namespace: str) -> AsyncIterator[object]:
    """Yield a Redis Streams bus on the real server, and delete its keys afterwards."""
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

    bus = RedisStreamsBus(REDIS_URL, namespace)
    await bus.ping()
    try:
        yield bus
    finally:
        await bus.delete_namespace()
        await bus.close()


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[object]:
    """Yield each bus implementation in turn: the behaviour suite runs against both."""
    if request.param == "memory":
        from barfinex_cli.bus.memory import MemoryBus

        memory = MemoryBus(namespace)
        yield memory
        await memory.close()
        return
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

    redis = RedisStreamsBus(REDIS_URL, namespace)
    await redis.ping()
    try:
        yield redis
    finally:
        await redis.delete_namespace()
        await redis.close()


@pytest.fixture
async def kernels() -> AsyncIterator[object]:
    """Yield `make(settings)`, which opens a kernel; every kernel made is closed afterwards."""
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.runtime.settings import Settings

    made: list[Kernel] = []

    async def make(settings: Settings) -> Kernel:
        kernel = Kernel(settings)
        await kernel.bus()
        made.append(kernel)
        return kernel

    try:
        yield make
    finally:
        for kernel in reversed(made):
            await kernel.close()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the Binance API key and secret the loopback exchange (`provider/fake_exchange`) takes."""
    from provider.fake_exchange import API_KEY, SECRET

    monkeypatch.setenv("BFX_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BFX_BINANCE_SECRET", SECRET)
