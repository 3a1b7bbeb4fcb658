"""The fill audit of an order settled from the provider's REST answer: published once.

An entry that fills while the inspector is down is settled at its next start from the provider's
order list (the reconciliation's `sync`), not from its fill event. The audit is published from
that answer (the paper broker's order state carries the fees), under an id derived from the
client order id, whether the fill event is lost or read afterwards.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from barfinex_cli.inspector.audit import audit_id
from barfinex_cli.inspector.execution import client_order_id
from inspector.conftest import Market, StartInspector, armed, until

FILL_EVENTS = ("order.partially_filled", "order.filled")


async def _audits(market: Market, order_id: str) -> list[Any]:
    return [
        e for e in await market.published("inspector.fill_audit")
        if e.payload.order_id == order_id
    ]  # fmt: skip


async def _state(market: Market, order_id: str) -> Any:
    return {o.client_order_id: o for o in await market.client.orders("paper")}.get(order_id)


async def _filled_while_down(market: Market, start_inspector: StartInspector) -> str:
    """Rest a limit entry, stop the inspector, fill the entry; return its client order id."""
    inspector, stop, task = await start_inspector()
    decision = await market.decide(order_type="limit", entry="95", stop="93", take_profit="104")
    entry_id = client_order_id(decision.id, "entry")

    def resting() -> bool:
        order = inspector.store.order(entry_id)
        return order is not None and order.status == "open"

    await until(resting)
    stop.set()
    await task
    await market.candle("BTC/USDT", 100, 100, 94, 96)  # low 94 <= 95: the limit fills

    async def filled() -> bool:
        state = await _state(market, entry_id)
        return state is not None and state.status == "filled"

    await until(filled)
    return entry_id


async def _drop_fill_events(market: Market, order_id: str) -> int:
    """Delete the entry's fill events from the bus, as a trimmed or lost stream would."""
    dropped = 0
    for kind in FILL_EVENTS:
        key = market.bus.key(kind)
        for entry, fields in await market.bus.redis.xrange(key):
            event = market.bus.decode(next(iter(fields.values())), kind)
            if event.payload.order.client_order_id == order_id:
                dropped += await market.bus.redis.xdel(key, entry)
    return dropped


async def _fill_events_acknowledged(market: Market) -> bool:
    for kind in FILL_EVENTS:
        key = market.bus.key(kind)
        if not await market.bus.redis.exists(key):
            continue
        pending = await market.bus.redis.xpending(key, "inspector.inspector")
        if int(pending["pending"]) != 0:
            return False
    return True


async def test_an_entry_whose_fill_event_never_arrives_is_audited_once_from_the_rest_answer(
    market: Market, start_inspector: StartInspector
) -> None:
    entry_id = await _filled_while_down(market, start_inspector)
    await until(lambda: _drop_fill_events(market, entry_id))  # once the provider published it
    state = await _state(market, entry_id)
    assert state.fees is not None and state.fees > 0  # the provider's answer carries the fee

    second, _, _ = await start_inspector()
    await until(lambda: _audits(market, entry_id))
    await until(lambda: armed(second, "BTC/USDT"))  # the fill opened a runtime position
    position = second.store.position("BTC/USDT")
    assert position is not None and position.runtime and position.strategy == "momentum"
    audits = await _audits(market, entry_id)
    assert len(audits) == 1
    audited = audits[0]
    assert audited.id == audit_id(second.store.order(entry_id))
    assert audited.payload.fees == state.fees
    assert audited.payload.average_price == Decimal(95) == state.average_price
    assert audited.payload.fill_rate == 1.0
    assert second.store.order(entry_id).audited


async def test_a_fill_event_read_after_the_rest_answer_audited_the_order_adds_no_second_audit(
    market: Market, start_inspector: StartInspector
) -> None:
    entry_id = await _filled_while_down(market, start_inspector)
    state = await _state(market, entry_id)

    second, _, _ = await start_inspector()
    await until(lambda: _audits(market, entry_id))
    await until(lambda: _fill_events_acknowledged(market))  # the fill event was handled too
    await until(lambda: armed(second, "BTC/USDT"))
    audits = await _audits(market, entry_id)
    assert len(audits) == 1
    assert audits[0].id == audit_id(second.store.order(entry_id))
    assert audits[0].payload.fees == state.fees  # counted once, not the answer's plus the event's
    assert second.store.order(entry_id).fees == state.fees
