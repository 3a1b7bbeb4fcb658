"""The advisor role end to end on real Redis: a replaying provider, a detector, the advisor.

It decides the detector's signals, serves its REST API and metrics, registers with the provider,
drops a signal for a symbol the provider does not hold, holds signals pending (unacknowledged)
while the provider is down and handles them once it answers, and `bfx advisor explain` prints a
decision from the audit store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from barfinex_cli.advisor.service import Advisor
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.cli.main import app
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.provider.service import Provider
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.config import AdvisorConfig, DetectorConfig, ProviderConfig
from barfinex_cli.runtime.settings import Settings, load_settings
from conftest import REDIS_URL, Kernels
from polling import until
from ports import free_port
from strategy_files import momentum

STRATEGY = momentum("momentum_test")


def _provider_config(port: int = 0) -> ProviderConfig:
    return ProviderConfig(
        symbols=("BTC/USDT",), timeframes=("1m",), speed=3000, history=300, days=0.5,
        port=port, exit_at_end=False, health_interval_s=1,
    )  # fmt: skip


class _Running:
    """Roles started in a test, stopped in reverse order at its end."""

    def __init__(self) -> None:
        self.roles: list[tuple[asyncio.Event, asyncio.Task[Any]]] = []

    async def start(self, role: Any) -> Any:
        stop = asyncio.Event()
        task = asyncio.create_task(role.run(stop))
        ready = asyncio.ensure_future(role.ready.wait())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()
        self.roles.append((stop, task))
        return role

    async def stop_last(self) -> None:
        stop, task = self.roles.pop()
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def running() -> AsyncIterator[_Running]:
    roles = _Running()
    try:
        yield roles
    finally:
        while roles.roles:
            await roles.stop_last()


@pytest.fixture
def settings(tmp_path: Path, namespace: str) -> Settings:
    return load_settings(home=tmp_path, namespace=namespace, redis_url=REDIS_URL, token="t0ken")


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[RedisStreamsBus]:
    redis = RedisStreamsBus(REDIS_URL, settings.namespace)
    try:
        yield redis
    finally:
        await redis.delete_namespace()
        await redis.close()


def _signal(symbol: str = "BTC/USDT", minute: int = 0) -> SignalGenerated:
    return SignalGenerated(
        strategy="manual", instance="manual", exchange="synthetic", symbol=symbol,
        timeframe="1m", candle_time=from_ms(1_704_067_200_000 + minute * 60_000),
        direction="long", score=2.0, threshold=2.0, attribution=[],
    )  # fmt: skip


async def test_the_advisor_decides_signals_serves_its_api_and_explains_a_decision(
    settings: Settings, kernels: Kernels, bus: RedisStreamsBus, running: _Running, tmp_path: Path
) -> None:
    provider: Provider = await running.start(await (await kernels(settings)).provider(
        _provider_config()
    ))  # fmt: skip
    url = provider.gateway_url
    strategy = tmp_path / "momentum.py"
    strategy.write_text(STRATEGY)
    await running.start(await (await kernels(settings)).detector(DetectorConfig(
        strategy=strategy, provider_url=url, port=0, instance="mom", join_registry=False,
    )))  # fmt: skip
    advisor: Advisor = await running.start(await (await kernels(settings)).advisor(
        AdvisorConfig(provider_url=url, port=0, heartbeat_s=0.2)
    ))  # fmt: skip
    assert advisor.clock.kind == "market"  # it follows the replaying provider
    await bus.publish(make_event(_signal("DOGE/USDT"), source="detector/manual"))
    await until(lambda: advisor.decisions >= 2 and advisor.dropped >= 1)

    async with httpx.AsyncClient(base_url=advisor.api_url or "") as api:
        health = (await api.get("/health")).json()
        assert health["status"] == "ok" and health["scorer"] == "rule"
        assert 'bfx_advisor_signals_total{outcome="decided"}' in (await api.get("/metrics")).text
        recent = (await api.get("/api/v1/decisions", params={"limit": 50})).json()["decisions"]
        dropped = next(d for d in recent if d["type"] == "advisor.signal.dropped")
        assert dropped["reason"] == "unknown_symbol" and dropped["symbol"] == "DOGE/USDT"
        decided = next(d for d in recent if d["type"] == "advisor.decision")
        explained = (await api.get(f"/api/v1/decisions/{decided['id']}")).json()
        assert explained["stages"][0]["stage"] == "context"
        assert explained["events"][-1]["type"] == "advisor.decision"
        assert (await api.get("/api/v1/decisions/nonexistent")).status_code == 404
        regimes = (await api.get("/api/v1/regime")).json()["regimes"]
        assert set(regimes.values()) <= {"trend", "range", "high_vol"} and regimes
        body = _signal(minute=200).model_dump(mode="json")
        evaluated = (await api.post("/api/v1/evaluate", json=body)).json()
        assert evaluated["outcome"] in ("decision", "rejected") and evaluated["stages"]
        bad = await api.post("/api/v1/evaluate", content=b'{"symbol": 1}')
        assert bad.status_code == 422 and "not a detector.signal payload" in bad.json()["detail"]
        tools = (await api.get("/api/v1/tools")).json()["tools"]
        assert {t["name"] for t in tools} == {
            "advisor_evaluate_signal", "advisor_explain_decision", "advisor_recent_decisions",
            "advisor_current_regime",
        }  # fmt: skip
    async with GatewayClient(url or "", "t0ken") as gateway:
        apps = await gateway.list_apps()
    assert [(a.name, a.role) for a in apps if a.role == "advisor"] == [("advisor", "advisor")]

    # explain, from the audit store the provider's recorder writes
    decision_id = decided["id"]
    result = await _explain(settings, decision_id)
    assert result["decision"]["id"] == decision_id
    assert [row["stage"] for row in result["stages"]] == [
        "context",
        "quality",
        "ml",
        "conviction",
        "calibration",
        "llm",
        "validation",
        "intent",
    ]
    assert all(row["outcome"] != "not run" for row in result["stages"])
    human = CliRunner().invoke(app, ["advisor", "explain", decision_id[-12:]],
                               env={"BFX_HOME": str(settings.home)})  # fmt: skip
    assert human.exit_code == 0, human.output
    assert "advisor.decision" in human.stdout and "conviction" in human.stdout
    assert all(stage in human.stdout for stage in ("context", "calibration", "validation"))


async def _explain(settings: Settings, ref: str) -> dict[str, Any]:
    """Run `bfx advisor explain REF --json` once the recorder has written the decision."""
    runner = CliRunner()
    env = {"BFX_HOME": str(settings.home), "BFX_NAMESPACE": settings.namespace}
    for _ in range(200):
        done = await asyncio.to_thread(runner.invoke, app, ["advisor", "explain", ref, "--json"],
                                       env=env)  # fmt: skip
        if done.exit_code == 0:
            return dict(json.loads(done.stdout))
        await asyncio.sleep(0.05)
    raise AssertionError(done.stdout + done.stderr)


async def test_signals_stay_pending_while_the_provider_is_down_and_are_handled_when_it_returns(
    settings: Settings, kernels: Kernels, bus: RedisStreamsBus, running: _Running
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    kernel = await kernels(settings)
    advisor: Advisor = await running.start(await kernel.advisor(AdvisorConfig(
        provider_url=url, serve_api=False, clock="wall", heartbeat_s=0.2, retry_s=0.1,
    )))  # fmt: skip
    assert advisor.provider_down
    signal = make_event(_signal(minute=290), source="detector/manual")
    await bus.publish(signal)
    failed: list[Envelope[Any]] = []

    async def watch() -> None:
        async for delivery in bus.tail(["advisor.*"], since="0", block_ms=100):
            failed.append(delivery.event)

    watcher = asyncio.create_task(watch())
    try:
        await until(lambda: any(e.type == "advisor.stage.failed" for e in failed), 30)
        held = next(e for e in failed if e.type == "advisor.stage.failed")
        assert held.payload.retryable and held.parent_id == signal.id
        assert advisor.status()["pending"] == 1 and advisor.signals_seen == 0
        pending = await bus.redis.xpending(bus.key("detector.signal"), "advisor.advisor")
        assert pending["pending"] == 1  # not acknowledged: a restart would get it back

        await running.start(await (await kernels(settings)).provider(_provider_config(port)))
        await until(lambda: advisor.signals_seen == 1 and advisor.status()["pending"] == 0, 60)
        assert not advisor.provider_down
        await until(lambda: any(e.payload.signal_id == signal.id and e.type in (
            "advisor.decision", "advisor.decision.rejected") for e in failed), 30)  # fmt: skip
        pending = await bus.redis.xpending(bus.key("detector.signal"), "advisor.advisor")
        assert pending["pending"] == 0
        running.roles.reverse()  # the advisor stops before the provider it talks to
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_a_refused_registration_is_no_outage_signals_are_still_decided(
    settings: Settings, kernels: Kernels, bus: RedisStreamsBus, running: _Running
) -> None:
    provider: Provider = await running.start(
        await (await kernels(settings)).provider(_provider_config())
    )
    async with GatewayClient(provider.gateway_url or "", "t0ken") as gateway:
        await gateway.register_app("advisor", "advisor", url="http://127.0.0.1:1")
    advisor: Advisor = await running.start(await (await kernels(settings)).advisor(
        AdvisorConfig(provider_url=provider.gateway_url, port=0, heartbeat_s=0.2)
    ))  # fmt: skip
    await bus.publish(make_event(_signal(minute=290), source="detector/manual"))
    await until(lambda: advisor.signals_seen == 1, 30)
    assert not advisor.provider_down


async def test_a_signal_ahead_of_its_candles_waits_for_them_instead_of_looking_stale(
    settings: Settings, kernels: Kernels, bus: RedisStreamsBus, running: _Running
) -> None:
    provider: Provider = await running.start(
        await (await kernels(settings)).provider(_provider_config())
    )
    advisor: Advisor = await running.start(await (await kernels(settings)).advisor(
        AdvisorConfig(provider_url=provider.gateway_url, port=0, join_registry=False,
                      context_wait_s=15)
    ))  # fmt: skip
    key = ("synthetic", "BTC/USDT", "1m")
    await until(lambda: advisor.context.newest_open(key) is not None, 30)
    newest = int(advisor.context.newest_open(key) or 0)
    ahead = (newest - 1_704_067_200_000) // 60_000 + 100  # 2 s of replay away
    signal = make_event(_signal(minute=ahead), source="detector/manual")
    await bus.publish(signal)
    await until(lambda: advisor.signals_seen == 1, 30)
    run = advisor.find(signal.id)
    assert run.result is not None
    quality = next(s for s in run.result.stages if s.stage == "quality")
    assert quality.outcome == "passed", quality.detail
