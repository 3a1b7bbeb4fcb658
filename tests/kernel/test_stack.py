"""The same role code in one process or many: identical signals, market time, no network."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.kernel.stack import run_in_process
from barfinex_cli.runtime.config import DetectorConfig, ProviderConfig
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from conftest import REDIS_URL
from polling import wait_until
from ports import free_port
from strategy_files import momentum

MOMENTUM = momentum("momentum")

REVERSION = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="reversion", symbols=["BTC/USDT"], timeframe="5m", threshold=1.0, cooldown=1,
    rules=[
        Rule("oversold", ta.rsi(5) < 40, weight=1.0, direction="long"),
        Rule("overbought", ta.rsi(5) > 60, weight=1.0, direction="short"),
    ],
)
"""

REPLAY = {"symbols": ("BTC/USDT",), "timeframes": ("1m", "5m"), "days": 0.2, "history": 60}
"""A fixed synthetic series: 288 minutes, the first 60 kept as history, the rest streamed."""


def _strategies(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "momentum.py", tmp_path / "reversion.py"]
    paths[0].write_text(MOMENTUM)
    paths[1].write_text(REVERSION)
    return paths


def _signals(audit_path: Path) -> list[tuple[Any, ...]]:
    """Each signal as what it says: instance, candle, direction, score, attribution."""
    with AuditStore(audit_path) as audit:
        events: list[Envelope[Any]] = audit.query(["detector.signal"], limit=None)
    return sorted(
        (e.payload.instance, e.payload.symbol, e.payload.candle_time, e.payload.direction,
         e.payload.score, json.dumps([a.model_dump(mode="json") for a in e.payload.attribution]))
        for e in events
    )  # fmt: skip


async def _in_process(tmp_path: Path, namespace: str, **provider: Any) -> Path:
    home = tmp_path / "one"
    settings = load_settings(home=home, namespace=namespace, bus="memory", token="t0ken")
    paths = _strategies(tmp_path)
    config = ProviderConfig(speed=None, exit_at_end=True, serve=False, **{**REPLAY, **provider})
    detectors = [
        DetectorConfig(strategy=p, instance=f"d{i}", serve_health=False, join_registry=False)
        for i, p in enumerate(paths)
    ]
    async with Kernel(settings) as kernel:
        run = await asyncio.wait_for(
            run_in_process(kernel, config, detectors, asyncio.Event()), 120
        )
        assert run.provider.clock.kind == "market"
        assert all(d.candles_seen == run.provider.runtime.candles for d in run.detectors)  # type: ignore[union-attr]
    return settings.audit_path


def _length(timeframe: str) -> timedelta:
    return timedelta(minutes={"1m": 1, "5m": 5}[timeframe])


def _bfx(home: Path, namespace: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ, "BFX_HOME": str(home), "BFX_NAMESPACE": namespace,
        "BFX_REDIS_URL": REDIS_URL, "BFX_TOKEN": "t0ken", "BFX_LOG_JSON": "true",
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def _multi_process(tmp_path: Path, namespace: str, processes: list[subprocess.Popen[str]]) -> Path:
    """The same replay and strategies, each role its own `bfx` process, on real Redis."""
    home = tmp_path / "many"
    paths = _strategies(tmp_path)
    recorder = _bfx(home, namespace, "events", "record")
    processes.append(recorder)
    port = free_port()
    provider = _bfx(
        home, namespace, "provider", "start", "--speed", "max", "--no-record", "--exit-at-end",
        "--wait-for-apps", "2", "--port", str(port), "--symbols", "BTC/USDT",
        "--timeframes", "1m,5m", "--days", str(REPLAY["days"]), "--history", str(REPLAY["history"]),
    )  # fmt: skip
    processes.append(provider)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 60, what="the provider's gateway")
    health_ports = [free_port(), free_port()]
    detectors = [
        _bfx(home, namespace, "detector", "run", str(p), "--instance", f"d{i}",
             "--provider", url, "--port", str(health_ports[i]))
        for i, p in enumerate(paths)
    ]  # fmt: skip
    processes.extend(detectors)
    wait_until(lambda: provider.poll() is not None, 120, what="the replay to end")
    assert provider.returncode == 0, provider.stderr.read() if provider.stderr else ""
    with AuditStore(home / "audit.db") as audit:
        wait_until(lambda: audit.count(["market.*"]) > 0, 30, what="the recorder")

    def health(i: int) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{health_ports[i]}/health", timeout=2).json())

    def candles_recorded() -> int:
        with AuditStore(home / "audit.db") as audit:
            return audit.count(["market.candle"])

    wait_until(
        lambda: all(health(i)["candles_seen"] == candles_recorded() for i in (0, 1)),
        60, what="the detectors to handle every candle",
    )  # fmt: skip
    published = [health(i)["published"] for i in (0, 1)]
    assert all(health(i)["clock"] == "market" for i in (0, 1))
    for proc in detectors:
        proc.send_signal(signal.SIGINT)
    for proc in detectors:
        assert proc.wait(30) == 0

    def detector_events() -> int:
        with AuditStore(home / "audit.db") as audit:
            return audit.count(["detector.*"])

    # Each detector publishes one last metrics event as it stops.
    wait_until(lambda: detector_events() >= sum(published) + 2, 30, what="every signal recorded")
    recorder.send_signal(signal.SIGINT)
    assert recorder.wait(30) == 0
    return home / "audit.db"


@pytest.mark.slow
async def test_one_process_on_a_memory_bus_gives_the_signals_of_many_processes_on_redis(
    tmp_path: Path, namespace: str, processes: list[subprocess.Popen[str]]
) -> None:
    one = _signals(await _in_process(tmp_path, namespace))
    try:
        many = _signals(await asyncio.to_thread(_multi_process, tmp_path, namespace, processes))
    finally:
        cleanup = RedisStreamsBus(REDIS_URL, namespace)
        await cleanup.delete_namespace()
        await cleanup.close()
    assert len(one) >= 10
    assert {s[0] for s in one} == {"d0", "d1"}
    assert many == one


async def test_a_replay_runs_to_the_end_on_market_time_with_no_socket_opened(
    tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    real_connect, real_bind = socket.socket.connect, socket.socket.bind

    def refuse(real: Any) -> Any:
        def guarded(self: socket.socket, address: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                opened.append(address)
                raise OSError("network use in a test that promised none")
            return real(self, address)

        return guarded

    monkeypatch.setattr(socket.socket, "connect", refuse(real_connect))
    monkeypatch.setattr(socket.socket, "bind", refuse(real_bind))
    audit_path = await _in_process(tmp_path, namespace, days=0.5)
    assert opened == []
    with AuditStore(audit_path) as audit:
        candles = audit.query(["market.candle"], limit=None)
        everything = audit.query(["*"], limit=None)
        walls = audit.db.execute("SELECT min(recorded_us), max(recorded_us) FROM events").fetchone()
    first_open = min(c.payload.open_time for c in candles)
    last_close = max(c.ts for c in candles)
    # A closed candle is stamped with its close; every other event with the market time
    # reached when it happened, never with today's wall time.
    assert all(c.ts == c.payload.open_time + _length(c.payload.timeframe) for c in candles)
    assert all(first_open <= e.ts <= last_close for e in everything)
    # ...and the recorder kept the wall time of each write beside it.
    assert walls[0] > int(last_close.timestamp() * 1_000_000)
