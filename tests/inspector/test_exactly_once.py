"""An inspector that dies right after publishing an outcome doubles nothing after its restart.

The first inspector runs on a bus that ends it (`Died`, raised like a SIGKILL: no `finally`
acknowledges anything) right after a chosen event lands on Redis: after its verdict (before the
entry order), or after the first protective order's announcement (the second guard placed at the
venue, unannounced). The second inspector starts on the same store and namespace: the decision
is delivered to it again. It must publish no second verdict (the repeat carries the first's id,
and the audit store keeps one row), place no second order, and announce every guard once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from barfinex_cli.bus.base import AnyEnvelope, Bus
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.inspector.execution import client_order_id
from barfinex_cli.inspector.service import Inspector
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.runtime.config import InspectorConfig
from barfinex_cli.store.audit import AuditStore
from inspector.conftest import Market, StartInspector, armed, until


class Died(BaseException):
    """The role's death at a chosen point: nothing after it runs, nothing is acknowledged."""


class DiesAfter:
    """The real bus, ending its role right after the `nth` event of `event_type` landed."""

    def __init__(self, bus: Bus, event_type: str, nth: int = 1) -> None:
        self._bus = bus
        self._type = event_type
        self._left = nth

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish(self, event: AnyEnvelope) -> str:
        entry_id = await self._bus.publish(event)
        if event.type == self._type:
            self._left -= 1
            if self._left == 0:
                raise Died(f"killed after publishing {event.type} {event.id}")
        return entry_id


async def _dying_inspector(market: Market, event_type: str, nth: int = 1, **extra: Any) -> tuple[
    Kernel, Inspector, asyncio.Task[int]
]:  # fmt: skip
    kernel = Kernel(market.settings)
    config = InspectorConfig(
        provider_url=market.url, port=0, clock="wall", kpi_interval_s=3600,
        reconcile_interval_s=3600, retry_s=0.2, heartbeat_s=0.5, serve_api=False, **extra,
    )  # fmt: skip
    inspector = await kernel.inspector(config)
    inspector.bus = DiesAfter(inspector.bus, event_type, nth)  # type: ignore[assignment]
    task = asyncio.create_task(inspector.run(asyncio.Event()))
    await asyncio.wait_for(inspector.ready.wait(), 30)
    return kernel, inspector, task


async def _died(task: asyncio.Task[int]) -> None:
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
    assert isinstance(task.exception(), Died), task.exception()


async def _acknowledged(market: Market) -> bool:
    """Tell whether the inspector's group has acknowledged every decision."""
    key = market.bus.key("advisor.decision")
    return int((await market.bus.redis.xpending(key, "inspector.inspector"))["pending"]) == 0


def _recorded(tmp_path: Path, events: list[Envelope[Any]]) -> list[Envelope[Any]]:
    """Write `events` to a fresh audit store as the recorder would; return what it holds."""
    with AuditStore(tmp_path / "audit-check.db") as audit:
        audit.append(events)
        return audit.query([e.type for e in events][:1], limit=None)


async def test_an_inspector_killed_after_its_verdict_publishes_it_once_and_places_the_order_once(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    kernel, first, task = await _dying_inspector(market, "inspector.verdict")
    decision = await market.decide("BTC/USDT")
    await _died(task)
    assert first.store.decision(decision.id)["verdict"] == "ALLOW"
    entry = client_order_id(decision.id, "entry")
    assert first.store.order(entry) is None  # it died before the order
    await kernel.close()
    pending = await market.bus.redis.xpending(
        market.bus.key("advisor.decision"), "inspector.inspector"
    )
    assert pending["pending"] == 1  # the decision was never acknowledged

    second, _, _ = await start_inspector()
    await until(lambda: armed(second, "BTC/USDT"), 30)
    verdicts = [
        v for v in await market.published("inspector.verdict")
        if v.payload.decision_id == decision.id
    ]  # fmt: skip
    assert len(verdicts) == 2  # published again after the restart ...
    assert len({v.id for v in verdicts}) == 1  # ... under the first one's id
    assert {v.payload.verdict for v in verdicts} == {"ALLOW"}
    assert len(_recorded(tmp_path, verdicts)) == 1  # the audit store keeps one
    assert second.verdicts == 0  # not judged a second time
    orders = [o.client_order_id for o in await market.client.orders("paper")]
    assert orders.count(entry) == 1


async def test_a_guard_placed_by_an_inspector_killed_before_announcing_it_is_announced_once(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    # dies right after the stop's announcement: the take-profit is at the venue, unannounced
    kernel, _, task = await _dying_inspector(market, "inspector.protective.placed")
    decision = await market.decide("BTC/USDT")
    await _died(task)
    await kernel.close()
    stop_id = client_order_id(decision.id, "stop_loss", 1)
    take_id = client_order_id(decision.id, "take_profit", 1)
    live = {o.client_order_id for o in await market.client.orders("paper", open_only=True)}
    assert {stop_id, take_id} <= live
    announced = [p.payload.order_id for p in await market.published("inspector.protective.*")]
    assert announced == [stop_id]

    second, _, _ = await start_inspector()
    await until(lambda: "entries open" in second.log, 30)

    async def both_announced() -> bool:
        placed = await market.published("inspector.protective.placed")
        return {p.payload.order_id for p in placed} == {stop_id, take_id}

    await until(both_announced, 30)
    await until(lambda: _acknowledged(market), 30)  # the decision delivered again, then acked
    placed = await market.published("inspector.protective.placed")
    by_order: dict[str, set[str]] = {}
    for event in placed:
        by_order.setdefault(event.payload.order_id, set()).add(event.id)
    assert {k: len(v) for k, v in by_order.items()} == {stop_id: 1, take_id: 1}
    assert len(_recorded(tmp_path, placed)) == 2  # one row per guard
    assert "announced the guards of BTC/USDT" in second.log
    assert "re-armed BTC/USDT" not in second.log  # the guards were live: nothing sent again
    ids = [o.client_order_id for o in await market.client.orders("paper")]
    assert ids.count(client_order_id(decision.id, "entry")) == 1
    assert not any(i.endswith(("-sl2", "-tp2")) for i in ids)
    verdicts = {v.id for v in await market.published("inspector.verdict")}
    assert len(verdicts) == 1


async def test_an_emulated_guard_announced_again_after_a_kill_keeps_its_id(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    # emulated guards: dies right after the stop's announcement, the take-profit unannounced
    policy = tmp_path / "policies.toml"
    policy.write_text('[risk]\nper_trade_pct = 1\n\n[execution]\nprotective = "emulate"\n')
    kernel, _, task = await _dying_inspector(market, "inspector.protective.placed", policy=policy)
    decision = await market.decide("BTC/USDT")
    await _died(task)
    await kernel.close()
    stop_id = client_order_id(decision.id, "stop_loss", 1)
    take_id = client_order_id(decision.id, "take_profit", 1)
    announced = [p.payload.order_id for p in await market.published("inspector.protective.*")]
    assert announced == [stop_id]

    await start_inspector(policy=policy)

    async def both_announced() -> bool:
        placed = await market.published("inspector.protective.placed")
        return {p.payload.order_id for p in placed} == {stop_id, take_id}

    await until(both_announced, 30)
    await until(lambda: _acknowledged(market), 30)
    placed = await market.published("inspector.protective.placed")
    assert all(p.payload.emulated for p in placed)
    by_order: dict[str, set[str]] = {}
    for event in placed:
        by_order.setdefault(event.payload.order_id, set()).add(event.id)
    assert {k: len(v) for k, v in by_order.items()} == {stop_id: 1, take_id: 1}
    assert [p.payload.order_id for p in placed].count(stop_id) == 2  # announced again ...
    assert len(_recorded(tmp_path, placed)) == 2  # ... and the audit store keeps one per guard
    assert await market.client.orders("paper", open_only=True) == []  # nothing at the venue
