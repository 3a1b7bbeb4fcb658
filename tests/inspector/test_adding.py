"""Adding to, flipping and closing one position: the store and the paper broker agree throughout.

The real provider and paper broker over loopback HTTP, Redis and SQLite (`conftest`). Each test
scripts the decisions and the candles, so every entry adds to (or flips) the one position the
broker nets per symbol, and a guard fires on a known candle.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.orders import OrderState, PositionChanged
from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.inspector.service import Inspector
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.runtime.config import InspectorConfig
from inspector.conftest import Market, StartInspector, armed, until

SYMBOL = "BTC/USDT"


async def _broker_size(market: Market) -> Decimal:
    """Return the broker's position in BTC/USDT, signed (+ long, - short)."""
    for position in await market.client.positions("paper"):
        if position.symbol == SYMBOL and position.side != "flat":
            return position.size if position.side == "long" else -position.size
    return Decimal(0)


def _store_size(inspector: Inspector) -> Decimal:
    """Return the store's open position in BTC/USDT, signed (+ long, - short)."""
    held = inspector.store.position(SYMBOL)
    if held is None or held.status != "open":
        return Decimal(0)
    return held.size if held.side == "long" else -held.size


async def _open_orders(market: Market) -> dict[str, OrderState]:
    return {o.client_order_id: o for o in await market.client.orders("paper", open_only=True)}


async def _guarded(market: Market, inspector: Inspector, generation: int) -> bool:
    """Tell whether exactly the position's guards of `generation` rest, each for its size."""
    held = inspector.store.position(SYMBOL)
    if held is None or held.status != "open" or held.generation != generation:
        return False
    first = f"i-{held.decision_id}"
    wanted = {f"{first}-sl{generation}", f"{first}-tp{generation}"}
    resting = await _open_orders(market)
    return set(resting) == wanted and all(o.amount == held.size for o in resting.values())


async def test_adding_to_a_long_keeps_one_position_of_the_brokers_size_under_guards_for_all_of_it(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    first = await market.decide(stop="98", take_profit="104", size_hint="1")
    await until(lambda: armed(inspector, SYMBOL))
    await market.decide(stop="99", take_profit="106", size_hint="0.5")  # adds, tighter stop
    await until(lambda: _guarded(market, inspector, 2))
    await market.decide(stop="97", take_profit="105", size_hint="0.25")  # adds, looser stop

    async def three_parts() -> bool:
        return await _broker_size(market) == Decimal("1.75") and await _guarded(
            market, inspector, 3
        )

    await until(three_parts)
    held = inspector.store.position(SYMBOL)
    assert held is not None and held.decision_id == first.id  # one position, named by its opener
    assert _store_size(inspector) == Decimal("1.75")
    assert held.stop == Decimal(99)  # the tighter stop of the three: never loosened by an add
    assert held.take_profit == Decimal(105)  # the newest decision's
    assert [p.symbol for p in inspector.store.positions()] == [SYMBOL]
    everything = {o.client_order_id: o for o in await market.client.orders("paper")}
    for generation in (1, 2):  # the earlier guards were moved, not left racing the new ones
        for kind in ("sl", "tp"):
            assert everything[f"i-{first.id}-{kind}{generation}"].status == "cancelled"
    resting = await _open_orders(market)
    stop = resting[f"i-{first.id}-sl3"]
    assert (stop.stop_price, stop.amount, stop.reduce_only) == (Decimal(99), Decimal("1.75"), True)

    await market.candle(SYMBOL, 100, 100.2, 98.5, 98.8)  # low 98.5 reaches the stop at 99
    await until(lambda: _store_size(inspector) == 0)
    assert await _broker_size(market) == 0
    await until(lambda: everything_settled(market))
    closed = inspector.store.position(SYMBOL)
    assert closed is not None and closed.status == "closed" and closed.size == 0
    await until(lambda: inspector.store.counters().losses == 1)  # one trade, not three
    assert inspector.store.counters().wins == 0


async def test_a_take_profit_of_an_added_position_closes_all_of_it_and_cancels_its_stop(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    first = await market.decide(stop="98", take_profit="104", size_hint="1")
    await until(lambda: armed(inspector, SYMBOL))
    await market.decide(stop="98", take_profit="103", size_hint="1")
    await until(lambda: _guarded(market, inspector, 2))
    await market.candle(SYMBOL, 100, 103.5, 99.5, 103)  # high 103.5 reaches the take-profit

    async def flat_everywhere() -> bool:
        return _store_size(inspector) == 0 and await _broker_size(market) == 0

    await until(flat_everywhere)
    everything = {o.client_order_id: o for o in await market.client.orders("paper")}
    take = everything[f"i-{first.id}-tp2"]
    assert (take.status, take.filled, take.average_price) == ("filled", Decimal(2), Decimal(103))
    await until(lambda: everything_settled(market))
    await until(lambda: inspector.store.counters().wins == 1)
    # 1 bought at 100 slipped 1 bp and 1 more, all sold at 103: one winning trade
    assert inspector.store.counters().realised_today > 0


async def everything_settled(market: Market) -> bool:
    return await market.client.orders("paper", open_only=True) == []


async def test_a_flip_closes_the_long_and_opens_a_short_of_the_new_size_only(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    await market.decide(stop="98", take_profit="104", size_hint="1")
    await until(lambda: armed(inspector, SYMBOL))
    flip = await market.decide(side="sell", stop="102", take_profit="96", size_hint="0.5")

    async def short() -> bool:
        return await _broker_size(market) == Decimal("-0.5") and await _guarded(
            market, inspector, 1
        )

    await until(short)
    held = inspector.store.position(SYMBOL)
    assert held is not None and held.decision_id == flip.id and held.side == "short"
    assert _store_size(inspector) == Decimal("-0.5")
    everything = {o.client_order_id: o for o in await market.client.orders("paper")}
    assert everything[f"i-{flip.id}-e"].amount == Decimal("0.5")  # not the held 1 plus 0.5
    await until(lambda: inspector.store.counters().wins + inspector.store.counters().losses == 1)


async def test_a_flat_position_event_read_after_an_add_does_not_close_what_is_held(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    await market.decide(size_hint="1")
    await until(lambda: armed(inspector, SYMBOL))
    await market.decide(size_hint="1")
    await until(lambda: _guarded(market, inspector, 2))
    # a position event from before the add, delivered late (the broker was flat back then)
    late = PositionChanged(
        account="paper", exchange="paper", symbol=SYMBOL, side="flat", size=Decimal(0),
        unrealised_pnl=Decimal(0), realised_pnl=Decimal(0), pnl_currency="USDT",
    )  # fmt: skip
    await market.bus.publish(make_event(late, source="provider/paper"))
    await market.candle(SYMBOL, 100, 100.2, 99.8, 100.1)  # a later event, read after it
    await until(lambda: inspector.marks.get(SYMBOL) == Decimal("100.1"))
    assert _store_size(inspector) == Decimal(2) == await _broker_size(market)
    assert await _guarded(market, inspector, 2)


def _by_hand(amount: str) -> PlaceOrderRequest:
    return PlaceOrderRequest(
        client_order_id="by-hand-add", account="paper", symbol=SYMBOL, side="buy",
        type="market", amount=Decimal(amount),
    )  # fmt: skip


async def _divergences(market: Market) -> list[Any]:
    return [e.payload for e in await market.published("inspector.divergence")]


async def test_a_remainder_left_at_the_broker_after_the_store_closed_is_a_divergence_at_once(
    market: Market, start_inspector: StartInspector
) -> None:
    # reconciling only every hour: the remainder must be found when the store closes
    inspector, _, _ = await start_inspector(reconcile_interval_s=3600)
    await market.decide(size_hint="1")
    await until(lambda: armed(inspector, SYMBOL))
    await market.client.place_order(_by_hand("0.5"))  # behind its back: the broker holds 1.5
    await market.candle(SYMBOL, 100, 104.5, 99.5, 103.5)  # the take-profit at 104 sells its 1
    await until(_divergences_found(market))
    found = (await _divergences(market))[0]
    assert (found.kind, found.key, found.local, found.remote, found.action) == (
        "position", SYMBOL, None, "0.5", "flagged"
    )  # fmt: skip
    alerts = [e.payload.message for e in await market.published("inspector.alert")]
    assert any("divergence: position BTC/USDT" in a for a in alerts)
    assert _store_size(inspector) == 0  # alert only: not taken over


async def test_an_adopted_remainder_of_a_runtime_position_is_guarded_for_its_size(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(reconcile_interval_s=3600, divergence_position="adopt")
    first = await market.decide(size_hint="1")
    await until(lambda: armed(inspector, SYMBOL))
    await market.client.place_order(_by_hand("0.5"))
    await market.candle(SYMBOL, 100, 104.5, 99.5, 103.5)
    await until(_divergences_found(market))
    assert (await _divergences(market))[0].action == "adopted_remote"
    await until(lambda: _guarded(market, inspector, 2))
    held = inspector.store.position(SYMBOL)
    assert held is not None and held.runtime and held.decision_id == first.id
    assert _store_size(inspector) == Decimal("0.5") == await _broker_size(market)


def _divergences_found(market: Market) -> Any:
    async def found() -> bool:
        return bool(await _divergences(market))

    return found


def _decision(order_type: str, entry: str, size_hint: str) -> Envelope[Any]:
    payload = DecisionMade(
        signal_id=f"sig-{order_type}-{entry}", exchange="replay", symbol=SYMBOL, side="buy",
        order_type=order_type, entry=Decimal(entry), stop=Decimal(97), take_profit=Decimal(104),
        size=Decimal(size_hint), conviction=0.7, reasoning="test", strategy="momentum",
    )  # fmt: skip
    return make_event(payload, source="advisor/advisor")


async def test_a_decision_judged_before_a_fill_event_is_read_takes_the_fill_from_the_provider(
    market: Market,
) -> None:
    # No consume loop: the inspector reads no event at all, as if the bus were behind, and
    # each decision is judged by a direct call. The provider's answers are all it has.
    config = InspectorConfig(provider_url=market.url, port=0, clock="wall", kpi_interval_s=3600,
                             reconcile_interval_s=3600)  # fmt: skip
    async with Kernel(market.settings) as kernel:
        inspector = await kernel.inspector(config)
        assert await inspector.reconciler.start_up()
        resting = _decision("limit", "99", "1")
        await inspector.decisions.decide(resting)  # a limit buy at 99 rests at the broker
        await market.candle(SYMBOL, 100, 100.2, 98.5, 99.5)  # fills it at 99: an event unread
        assert await _broker_size(market) == Decimal(1)
        await inspector.decisions.decide(_decision("market", "100", "0.5"))  # an add
        assert _store_size(inspector) == Decimal("1.5") == await _broker_size(market)
        held = inspector.store.position(SYMBOL)
        assert held is not None and held.decision_id == resting.id
        assert await _guarded(market, inspector, 2)
