"""Stop-loss and take-profit orders that guard every runtime position, held by the venue itself.

Only the guards the venue can hold are sent (`Protector.holds`); the others are emulated by the
inspector on price updates (`emulation`, `guard`).

As soon as an entry fills, a reduce-only `stop_market` at the intent's stop and a reduce-only
`limit` at its take-profit are placed at the provider, so the position stays protected even
while the inspector is down. When one fills the other is cancelled (one-cancels-other, emulated:
the paper broker also cancels a reduce-only order once its position is flat). A trailing stop
(`trailing_stop_pct`) follows the best price since entry; move-to-breakeven
(`breakeven_at_r`) lifts the stop to the entry once the price went that many risk units in
favour. A move places the new order first (next generation id) and then cancels the old one,
so the position is never naked. `plan` and `trail` are pure; `Protector` sends what they say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from barfinex_cli.contracts.inspector import ProtectiveKind
from barfinex_cli.inspector.execution import Executor, client_order_id
from barfinex_cli.store.inspector import OrderRecord, PositionRecord


@dataclass(frozen=True, slots=True)
class Move:
    """A stop to move: from where, to where, and why."""

    previous: Decimal
    price: Decimal
    reason: str


def exit_side(position: PositionRecord) -> str:
    """Return the side that reduces `position`."""
    return "sell" if position.side == "long" else "buy"


def plan(position: PositionRecord, generation: int) -> list[tuple[ProtectiveKind, OrderRecord]]:
    """Return the protective orders `position` needs: a stop and a take-profit where given."""
    assert position.decision_id is not None
    side = exit_side(position)
    out: list[tuple[ProtectiveKind, OrderRecord]] = []
    if position.stop is not None:
        out.append((
            "stop_loss",
            OrderRecord(
                client_order_id=client_order_id(position.decision_id, "stop_loss", generation),
                decision_id=position.decision_id, role="stop_loss", symbol=position.symbol,
                side=side,  # type: ignore[arg-type]
                type="stop_market", amount=position.size, stop_price=position.stop,
                reduce_only=True, intended_price=position.stop,
            ),
        ))  # fmt: skip
    if position.take_profit is not None:
        out.append((
            "take_profit",
            OrderRecord(
                client_order_id=client_order_id(position.decision_id, "take_profit", generation),
                decision_id=position.decision_id, role="take_profit", symbol=position.symbol,
                side=side,  # type: ignore[arg-type]
                type="limit", amount=position.size, price=position.take_profit,
                reduce_only=True, intended_price=position.take_profit,
            ),
        ))  # fmt: skip
    return out


def trail(
    position: PositionRecord,
    price: Decimal,
    *,
    trailing_pct: float | None,
    breakeven_at_r: float | None,
    initial_stop: Decimal | None,
) -> Move | None:
    """Return where the stop should go at `price`, or None to leave it.

    A stop only ever moves in the position's favour.
    """
    if position.stop is None:
        return None
    long = position.side == "long"
    best = position.best_price or position.entry
    best = max(best, price) if long else min(best, price)
    target = position.stop
    reason = ""
    if breakeven_at_r is not None and initial_stop is not None:
        risk = abs(position.entry - initial_stop)
        gained = (best - position.entry) if long else (position.entry - best)
        reached = risk > 0 and gained >= risk * Decimal(str(breakeven_at_r))
        better = position.entry > target if long else position.entry < target
        if reached and better:
            target, reason = position.entry, "break-even"
    if trailing_pct is not None:
        pct = Decimal(str(trailing_pct)) / 100
        candidate = best * (1 - pct) if long else best * (1 + pct)
        candidate = candidate.quantize(Decimal("1e-8"))
        if (long and candidate > target) or (not long and candidate < target):
            target, reason = candidate, f"trailing {trailing_pct:g}%"
    if target == position.stop:
        return None
    return Move(previous=position.stop, price=target, reason=reason)


def _everywhere(position: PositionRecord, kind: ProtectiveKind) -> bool:
    return True


class Protector:
    """Place, move and cancel the protective orders of runtime positions through an executor.

    `holds(position, kind)` says whether the venue holds a guard of that kind; the ones it does
    not are emulated by the inspector (`emulation`), never sent, never counted as missing.
    """

    def __init__(
        self,
        executor: Executor,
        holds: Callable[[PositionRecord, ProtectiveKind], bool] = _everywhere,
    ) -> None:
        self.executor = executor
        self.holds = holds

    async def arm(
        self, position: PositionRecord, now_ms: int, generation: int | None = None
    ) -> tuple[PositionRecord, list[tuple[ProtectiveKind, OrderRecord]]]:
        """Place the position's protective orders; return it (with their ids) and what was sent.

        The ids are written on the position before anything is sent, so a crash between two
        placements leaves a restart knowing every order that may be at the provider.
        """
        gen = generation or position.generation
        planned = [(k, o) for k, o in plan(position, gen) if self.holds(position, k)]
        ids = {kind: order.client_order_id for kind, order in planned}
        armed = replace(
            position,
            generation=gen,
            stop_order=ids.get("stop_loss", position.stop_order),
            tp_order=ids.get("take_profit", position.tp_order),
        )
        for _, order in planned:
            self.executor.store.save_order(replace(order, status="in_flight", placed_ms=now_ms))
        self.executor.store.save_position(armed)
        sent: list[tuple[ProtectiveKind, OrderRecord]] = []
        for kind, order in planned:
            sent.append((kind, await self.executor.submit(order, now_ms)))
        return armed, sent

    async def cancel_stale(self, position: PositionRecord, now_ms: int) -> None:
        """Cancel live protective orders of the position's symbol that no longer guard it."""
        keep = {position.stop_order, position.tp_order}
        for order in self.executor.store.orders(live_only=True):
            stale = order.role in ("stop_loss", "take_profit") and order.client_order_id not in keep
            if stale and order.symbol == position.symbol:
                await self.executor.cancel(order.client_order_id, now_ms)

    def missing(self, position: PositionRecord) -> bool:
        """Tell whether a protective order the position should have is not live."""
        store = self.executor.store
        guards: tuple[tuple[ProtectiveKind, Decimal | None, str | None], ...] = (
            ("stop_loss", position.stop, position.stop_order),
            ("take_profit", position.take_profit, position.tp_order),
        )
        for kind, wanted, order_id in guards:
            if wanted is None or not self.holds(position, kind):
                continue
            order = store.order(order_id) if order_id else None
            if order is None or not order.live or order.amount < position.size:
                return True
        return False

    async def rearm(
        self, position: PositionRecord, now_ms: int
    ) -> tuple[PositionRecord, list[tuple[ProtectiveKind, OrderRecord]]]:
        """Replace the protective orders with a new generation, then cancel the old ones."""
        armed, sent = await self.arm(position, now_ms, position.generation + 1)
        await self.cancel_stale(armed, now_ms)
        return armed, sent

    async def cancel_all(self, position: PositionRecord, now_ms: int) -> None:
        """Cancel every live protective order of the position's symbol (it is closed): its
        own and any earlier generation's still resting."""
        await self.cancel_stale(replace(position, stop_order=None, tp_order=None), now_ms)

    async def move_stop(
        self, position: PositionRecord, move: Move, now_ms: int
    ) -> tuple[PositionRecord, OrderRecord | None]:
        """Place the stop at `move.price` (next generation), then cancel the old stop."""
        moved = replace(position, stop=move.price, generation=position.generation + 1)
        stops = [order for kind, order in plan(moved, moved.generation) if kind == "stop_loss"]
        if not stops:
            return position, None
        placed = await self.executor.submit(stops[0], now_ms)
        if placed.status == "rejected":
            return position, None
        moved = replace(moved, stop_order=placed.client_order_id)
        self.executor.store.save_position(moved)
        await self.cancel_stale(moved, now_ms)
        return moved, placed
