"""A whole run survives Redis killed and restarted mid-replay, with its data or without.

The single-process stack (provider replaying at full speed, a detector, the recorder) runs on
the Redis bus of a `redis-server` this test owns (persistent: every write fsynced), twice: once
undisturbed, once with the server SIGKILLed in the middle of the replay and started again on the
same port a moment later. Both runs must end with the same candles in market.db, the same candle
events on the bus and in audit.db (each once), and the same signals. Restarted empty (no
persistence), the run still goes to its end, market.db is complete, and the provider's
`provider.bus.recovered` names the streams whose earlier entries Redis lost.

Redis is killed from inside the provider's publishing (its `on_published` hook, at the 150th
candle), so the kill lands mid-replay by construction, never after the provider's last candle.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.kernel.stack import StackRun, run_in_process
from barfinex_cli.runtime.config import DetectorConfig, ProviderConfig
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.market import MarketStore, SeriesKey
from bus.redis_faults import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(360)]
"""Two whole runs per test: the default 120 s was too tight on a loaded machine."""

STRATEGY = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="momentum", symbols=["BTC/USDT"], timeframe="1m", threshold=2.0, cooldown=2,
    rules=[
        Rule("above_ema", ta.close > ta.ema("close", 10), weight=1.0, direction="long"),
        Rule("below_ema", ta.close < ta.ema("close", 10), weight=1.0, direction="short"),
        Rule("rsi_up", ta.rsi(7) > 55, weight=1.0, direction="long"),
        Rule("rsi_down", ta.rsi(7) < 45, weight=1.0, direction="short"),
    ],
)
"""

REPLAY: dict[str, Any] = {
    "symbols": ("BTC/USDT",), "timeframes": ("1m", "5m"), "days": 0.5, "history": 60,
}  # fmt: skip


class Outcome:
    """What a run left behind, as plain comparable data."""

    def __init__(self, home: Path, bus_candles: list[str]) -> None:
        with MarketStore(home / "market.db") as market:
            self.stored = {
                (s.symbol, s.timeframe): market.candles(
                    SeriesKey(s.exchange, s.symbol, s.timeframe)
                )
                for s in market.series()
            }
        with AuditStore(home / "audit.db") as audit:
            candles = audit.query(["market.candle"], limit=None)
            signals = audit.query(["detector.signal"], limit=None)
        self.recorded_ids = [e.id for e in candles]
        self.recorded = sorted(
            (e.payload.symbol, e.payload.timeframe, e.payload.open_time) for e in candles
        )
        self.signals = sorted(
            (s.payload.candle_time, s.payload.direction, s.payload.score,
             json.dumps([a.model_dump(mode="json") for a in s.payload.attribution]))
            for s in signals
        )  # fmt: skip
        self.bus_candles = bus_candles
        with AuditStore(home / "audit.db") as audit:
            self.recovered = [
                e.payload for e in audit.query(["provider.bus.recovered"], limit=None)
            ]


async def _run(tmp_path: Path, name: str, *, disturb: bool, persistent: bool = True) -> Outcome:
    server = RedisServer(tmp_path / f"{name}-redis", persistent=persistent)
    server.data.mkdir()
    await server.start()
    home = tmp_path / name
    strategy = tmp_path / "momentum.py"
    strategy.write_text(STRATEGY)
    settings = load_settings(home=home, namespace="faults", redis_url=server.url, token="t0ken")
    provider = ProviderConfig(speed=None, exit_at_end=True, serve=False, **REPLAY)
    detector = DetectorConfig(
        strategy=strategy, instance="d0", serve_health=False, join_registry=False
    )
    outages = 0
    restarting: list[asyncio.Task[None]] = []
    try:
        async with Kernel(settings) as kernel:
            bus: Any = await kernel.bus()
            stop = asyncio.Event()

            async def hook(run: StackRun) -> None:
                if disturb:
                    _restart_mid_replay(server, run, restarting)

            running = asyncio.create_task(
                run_in_process(kernel, provider, [detector], stop, on_ready=hook)
            )
            await asyncio.wait_for(running, 180)
            assert not disturb or restarting, "the replay ended before Redis could be restarted"
            await asyncio.gather(*restarting)
            outages = bus.outage.outages
            candles = await bus.redis.xrange(bus.key("market.candle"))
        if disturb:
            assert outages >= 1, "Redis was restarted but the bus never saw an outage"
        return Outcome(home, [json.loads(data[b"e"])["id"] for _, data in candles])
    finally:
        server.stop()


def _restart_mid_replay(
    server: RedisServer, run: StackRun, restarting: list[asyncio.Task[None]]
) -> None:
    """Kill Redis right after the provider has published its 150th candle; restart it 0.3 s on.

    The kill happens inside the provider's own publishing, so it lands mid-replay by
    construction: the rest of the replay (several hundred candles) is published into the
    restarted server. Watching the stream's length from outside raced the provider: at full
    speed, on a loaded machine, it had published every candle before the watcher looked, and a
    server restarted empty then had nothing left to deliver (the cause of the earlier xfail).
    """
    rt = run.provider.runtime
    assert rt is not None
    then = rt.on_published
    published = 0

    def published_batch(batch: Sequence[Envelope[Any]]) -> None:
        nonlocal published
        if then is not None:
            then(batch)
        published += sum(1 for e in batch if e.type == "market.candle")
        if published >= 150 and not restarting:
            server.stop(kill=True)
            restarting.append(asyncio.create_task(_start_again(server)))

    rt.on_published = published_batch


async def _start_again(server: RedisServer) -> None:
    await asyncio.sleep(0.3)  # the outage itself: roles meet a refused connection meanwhile
    await server.start()


async def test_a_run_with_redis_killed_and_restarted_mid_replay_ends_as_an_undisturbed_one(
    tmp_path: Path,
) -> None:
    calm = await _run(tmp_path, "calm", disturb=False)
    hit = await _run(tmp_path, "hit", disturb=True)
    assert len(calm.recorded) > 300 and calm.signals
    assert hit.stored == calm.stored  # market.db
    assert hit.recorded == calm.recorded  # audit.db: every candle event, once
    assert len(set(hit.recorded_ids)) == len(hit.recorded_ids)
    assert sorted(hit.bus_candles) == sorted(hit.recorded_ids)  # the bus: each once, all recorded
    assert hit.signals == calm.signals


async def test_a_run_with_redis_restarted_empty_goes_on_and_says_which_streams_it_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calm = await _run(tmp_path, "calm", disturb=False)
    with caplog.at_level(logging.WARNING, logger="bfx.recorder"):
        hit = await _run(tmp_path, "empty", disturb=True, persistent=False)
    # the end waits for what is left on the bus, not for a count of events Redis lost
    assert not [r for r in caplog.records if "did not catch up" in r.getMessage()]
    assert hit.stored == calm.stored  # market.db is the provider's own: complete
    assert hit.bus_candles  # the restarted Redis holds candles: the replay went on after it
    assert [r.lost_types for r in hit.recovered] and "market.candle" in hit.recovered[0].lost_types
    assert len(hit.recorded) <= len(calm.recorded)  # what Redis lost unrecorded is gone ...
    assert set(hit.recorded) <= set(calm.recorded)  # ... and nothing else appeared
    assert len(set(hit.recorded_ids)) == len(hit.recorded_ids)  # once each
    assert hit.recorded[-1] == calm.recorded[-1]  # the roles went on to the end
