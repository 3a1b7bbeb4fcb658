"""A small real stack for the security tests, served from its own thread and event loop.

`running_stack` starts the kernel's in-process stack (provider with its gateway on a free loopback
port, one detector, one advisor, one inspector, the recorder) in a background thread, waits until
the advisor and the inspector have registered with the gateway, and yields what a test needs to
reach them over real HTTP. Sync test code (schemathesis, hypothesis, subprocesses) can then call
the servers without sharing their loop. The replay streams slowly and never ends on its own; the
block's end stops every role.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from barfinex_cli.runtime.config import (
    AdvisorConfig,
    DetectorConfig,
    InspectorConfig,
    ProviderConfig,
)
from barfinex_cli.runtime.settings import Settings

MOMENTUM = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="momentum", symbols=["BTC/USDT"], timeframe="1m", threshold=1.0, cooldown=1,
    rules=[
        Rule("up", ta.close > ta.ema("close", 5), weight=1.0, direction="long"),
        Rule("down", ta.close < ta.ema("close", 5), weight=1.0, direction="short"),
    ],
)
"""


@dataclass
class Stack:
    """The addresses of a running stack, and the roles themselves (read them, do not drive them)."""

    gateway_url: str
    token: str
    advisor_url: str
    inspector_url: str
    run: Any = None
    errors: list[BaseException] = field(default_factory=list)


@contextlib.contextmanager
def running_stack(
    settings: Settings,
    tmp_path: Path,
    *,
    advisor: dict[str, Any] | None = None,
    inspector: dict[str, Any] | None = None,
    speed: float = 600.0,
) -> Iterator[Stack]:
    """Run the stack over `settings` until the block ends; yield its addresses."""
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.kernel.stack import StackRun, run_in_process

    strategy = tmp_path / "momentum.py"
    strategy.write_text(MOMENTUM)
    provider_config = ProviderConfig(
        symbols=("BTC/USDT",), timeframes=("1m",), speed=speed, history=60, days=0.5,
        port=0, health_interval_s=0.5, exit_at_end=False,
    )  # fmt: skip
    detector_config = DetectorConfig(strategy=strategy, instance="d0", serve_health=False)
    # from the settings, so `BFX_ADVISOR__*` and `[advisor]` apply (the LLM key among them)
    advisor_config = AdvisorConfig.model_validate(
        {**settings.advisor.model_dump(), "port": 0, **(advisor or {})}
    )
    inspector_config = InspectorConfig.model_validate(
        {**settings.inspector.model_dump(), "port": 0, **(inspector or {})}
    )
    ready = threading.Event()
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()

        async def on_ready(run: StackRun) -> None:
            box["run"] = run
            ready.set()

        async with Kernel(settings) as kernel:
            await run_in_process(
                kernel, provider_config, [detector_config], stop,
                advisor_configs=[advisor_config], inspector_configs=[inspector_config],
                on_ready=on_ready,
            )  # fmt: skip

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test, which fails on it
            box["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="security-stack", daemon=True)
    thread.start()
    try:
        if not ready.wait(90) or "error" in box:
            raise RuntimeError(f"the stack did not start: {box.get('error')!r}")
        run = box["run"]
        token = run.provider.gateway_token if hasattr(run.provider, "gateway_token") else None
        stack = Stack(
            gateway_url=str(run.provider.gateway_url),
            token=token or _token_of(settings),
            advisor_url=str(run.advisors[0].api_url),
            inspector_url=str(run.inspectors[0].api_url),
            run=run,
        )
        _wait_registered(stack, {"advisor", "inspector"})
        yield stack
    finally:
        if stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        if "error" in box and not isinstance(box["error"], asyncio.CancelledError):
            raise RuntimeError("the stack failed") from box["error"]


def _token_of(settings: Settings) -> str:
    if settings.token is not None:
        return settings.token.get_secret_value()
    return (settings.home / "token").read_text().strip()


def _wait_registered(stack: Stack, names: set[str], timeout_s: float = 30) -> None:
    """Poll the registry until every named app is alive."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        answer = httpx.get(f"{stack.gateway_url}/api/v1/apps", headers=headers, timeout=5)
        seen = {a["name"] for a in answer.json()["apps"] if a["status"] == "alive"}
        if names <= seen:
            return
        time.sleep(0.1)
    raise AssertionError(f"apps {sorted(names - seen)} never registered (alive: {sorted(seen)})")


@contextlib.contextmanager
def threaded_gateway(tmp_path: Path, **options: Any) -> Iterator[str]:
    """Serve a bare gateway (memory bus, paper broker) from its own thread; yield its base URL."""
    from barfinex_cli.bus.memory import MemoryBus
    from barfinex_cli.provider.gateway.context import GatewayOptions
    from provider.gateway_server import gateway, make_broker, make_context

    ready = threading.Event()
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    done = asyncio.Event()

    async def main() -> None:
        bus = MemoryBus("threaded")
        ctx = make_context(
            tmp_path, bus, broker=make_broker(bus), options=GatewayOptions(**options)
        )
        async with gateway(ctx) as http:
            box["url"] = str(http.base_url).rstrip("/")
            ready.set()
            await done.wait()

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test
            box["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="security-gateway", daemon=True)
    thread.start()
    try:
        if not ready.wait(30) or "error" in box:
            raise RuntimeError(f"the gateway did not start: {box.get('error')!r}")
        yield box["url"]
    finally:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(done.set)
        thread.join(30)
