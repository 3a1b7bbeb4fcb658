"""Intents by kind, end to end: a decision closes or reduces a position, or is refused for why.

The real provider and paper broker over loopback HTTP, Redis and SQLite (`conftest`): an
`advisor.decision` of kind `close` or `reduce` reaches the inspector off the bus, is judged, and
its market exit order fills at the broker; the guards follow. Entries whose stop or take-profit
sit on the wrong side of the price are refused before anything is placed, and an entry filled
past the slippage tolerance is flagged in its fill audit.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import FillAudited
from barfinex_cli.contracts.orders import OrderState
from barfinex_cli.inspector.service import Inspector
from inspector.conftest import Market, StartInspector, armed, until
from inspector.test_exactly_once import _died, _dying_inspector

SYMBOL = "BTC/USDT"


async def _exit(market: Market, kind: str, side: str = "sell", size: str = "0") -> Envelope[Any]:
    """Publish an exit decision as the advisor makes one of a `close`/`reduce` signal."""
    payload = DecisionMade(
        signal_id=f"sig-{uuid.uuid4().hex[:12]}", exchange="replay", symbol=SYMBOL, side=side,
        kind=kind, order_type="market", entry=Decimal(100), stop=Decimal(0),
        take_profit=Decimal(0), size=Decimal(size), conviction=0.0, reasoning="exit rule",
        strategy="momentum",
    )  # fmt: skip
    event = make_event(payload, source="advisor/advisor")
    await market.bus.publish(event)
    return event


async def _open_orders(market: Market) -> dict[str, OrderState]:
    return {o.client_order_id: o for o in await market.client.orders("paper", open_only=True)}


async def _broker_size(market: Market) -> Decimal:
    for position in await market.client.positions("paper"):
        if position.symbol == SYMBOL and position.side != "flat":
            return position.size if position.side == "long" else -position.size
    return Decimal(0)


async def _verdict_of(market: Market, decision: Envelope[Any]) -> Any:
    async def found() -> Any:
        for event in await market.published("inspector.verdict"):
            if event.payload.decision_id == decision.id:
                return event.payload
        return None

    await until(found)
    return await found()


def _held(inspector: Inspector) -> Decimal:
    held = inspector.store.position(SYMBOL)
    return Decimal(0) if held is None or held.status != "open" else held.size


async def test_a_close_decision_closes_the_runtime_position_and_cancels_its_guards(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    opened = await market.decide()
    await until(lambda: armed(inspector, SYMBOL))
    close = await _exit(market, "close")
    verdict = await _verdict_of(market, close)
    assert (verdict.verdict, verdict.policy) == ("ALLOW", "exit")
    assert "close 1 of 1 held" in verdict.reason

    async def flat() -> bool:
        return await _broker_size(market) == 0 and await _open_orders(market) == {}

    await until(flat)
    await until(lambda: inspector.store.position(SYMBOL).status == "closed")
    orders = {o.client_order_id: o for o in await market.client.orders("paper")}
    exit_order = orders[f"i-{close.id}-x1"]
    assert (exit_order.side, exit_order.type, exit_order.filled) == ("sell", "market", 1)
    assert orders[f"i-{opened.id}-sl1"].status == "cancelled"
    assert orders[f"i-{opened.id}-tp1"].status == "cancelled"
    assert inspector.store.counters().trades_today == 1  # an exit is not a new trade


async def test_a_reduce_decision_takes_its_size_off_and_resizes_the_guards(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    opened = await market.decide()
    await until(lambda: armed(inspector, SYMBOL))
    reduce = await _exit(market, "reduce", size="0.4")
    verdict = await _verdict_of(market, reduce)
    assert (verdict.verdict, verdict.policy) == ("ALLOW", "exit")
    assert "reduce 0.4 of 1 held" in verdict.reason
    first = f"i-{opened.id}"

    async def resized() -> bool:
        resting = await _open_orders(market)
        return (
            await _broker_size(market) == Decimal("0.6")
            and set(resting) == {f"{first}-sl2", f"{first}-tp2"}
            and all(o.amount == Decimal("0.6") for o in resting.values())
        )

    await until(resized)
    assert _held(inspector) == Decimal("0.6")
    held = inspector.store.position(SYMBOL)
    assert held is not None and (held.stop, held.take_profit) == (Decimal(98), Decimal(104))
    orders = {o.client_order_id: o for o in await market.client.orders("paper")}
    assert orders[f"{first}-sl1"].status == orders[f"{first}-tp1"].status == "cancelled"
    placed = [p.payload for p in await market.published("inspector.protective.placed")]
    assert sorted((p.kind, p.amount) for p in placed if p.order_id.endswith("2")) == [
        ("stop_loss", Decimal("0.6")),
        ("take_profit", Decimal("0.6")),
    ]


async def test_a_close_with_nothing_held_is_blocked_with_the_reason_and_places_nothing(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    close = await _exit(market, "close")
    verdict = await _verdict_of(market, close)
    assert (verdict.verdict, verdict.policy) == ("BLOCK", "exit")
    assert verdict.reason == "no long position of momentum in BTC/USDT to close"
    assert await market.client.orders("paper") == []
    assert inspector.store.orders() == []


async def test_a_take_profit_on_the_wrong_side_of_the_price_is_blocked_naming_both_levels(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    # a sell at 100 with its take-profit above: the limit would fill the moment it rests
    decision = await market.decide(side="sell", stop="102", take_profit="130")
    verdict = await _verdict_of(market, decision)
    assert (verdict.verdict, verdict.policy) == ("BLOCK", "price_levels")
    assert verdict.reason == (
        "take-profit on the wrong side of the price: a sell at 100 needs its stop above and its "
        "take-profit below it (stop 102, take-profit 130); it would fill at once "
        "(entry=100.0, stop=102.0, take_profit=130.0)"
    )
    assert verdict.figures == {"entry": 100.0, "stop": 102.0, "take_profit": 130.0}
    assert await market.client.orders("paper") == []
    assert inspector.store.orders() == []


async def test_an_entry_filled_past_the_slippage_tolerance_is_flagged_in_its_audit_and_alerted(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("[risk]\nper_trade_pct = 1\n\n[market]\nmax_slippage_bps = 20\n")
    await start_inspector(policy=policy)
    # intended 99, the market is at 100: the market order fills about 100 bps worse
    late = await market.decide(entry="99", stop="97", take_profit="104")
    near = await market.decide(entry="50", stop="49", take_profit="52", symbol="ETH/USDT")

    async def audits() -> dict[str, FillAudited]:
        found = await market.published("inspector.fill_audit")
        return {e.payload.order_id: e.payload for e in found if e.payload.order_id.endswith("-e")}

    await until(lambda: _both(audits, late, near))
    by_order = await audits()
    flagged, within = by_order[f"i-{late.id}-e"], by_order[f"i-{near.id}-e"]
    assert flagged.tolerance_bps == 20 and flagged.past_tolerance
    assert flagged.slippage_bps > 20
    assert within.tolerance_bps == 20 and not within.past_tolerance  # ETH at 50 as intended
    alerts = [e.payload for e in await market.published("inspector.alert")]
    slipped = [a for a in alerts if a.policy == "slippage"]
    assert len(slipped) == 1 and f"i-{late.id}-e" in slipped[0].message
    assert "past the 20 bps slippage tolerance" in slipped[0].message


async def _both(audits: Any, *decisions: Envelope[Any]) -> bool:
    found = await audits()
    return all(f"i-{d.id}-e" in found for d in decisions)


async def test_a_reduce_judged_by_an_inspector_killed_after_its_verdict_is_sent_once_after_restart(
    market: Market, start_inspector: StartInspector
) -> None:
    # dies right after its second verdict (the reduce's), before the exit order is sent
    kernel, first, task = await _dying_inspector(market, "inspector.verdict", nth=2)
    await market.decide()
    await until(lambda: armed(first, SYMBOL))
    reduce = await _exit(market, "reduce", size="0.4")
    await _died(task)
    exit_id = f"i-{reduce.id}-x1"
    assert first.store.decision(reduce.id)["verdict"] == "ALLOW"
    assert first.store.order(exit_id) is None  # it died before the exit
    await kernel.close()

    second, _, _ = await start_inspector()

    async def reduced() -> bool:
        return await _broker_size(market) == Decimal("0.6") and _held(second) == Decimal("0.6")

    await until(reduced)
    assert second.verdicts == 0  # the stored verdict, not a second judgment
    orders = [o.client_order_id for o in await market.client.orders("paper")]
    assert orders.count(exit_id) == 1
