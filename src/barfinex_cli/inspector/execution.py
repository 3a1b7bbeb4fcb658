"""Orders through the provider with ids derived from the decision: never placed twice, never lost.

Every order the inspector sends gets a `client_order_id` computed from the decision it executes
and its role (`i-<decision id>-e` for the entry, `-sl1`/`-tp1` for protective orders and their
later generations, `-x1` for a close), so sending it again — after a timeout, a dropped
connection or a restart — can only return the order the provider already holds. The order is
written to the store as `in_flight` before it is sent; an answer moves it on. When no answer
comes the order stays `in_flight`: it is never assumed failed and never sent blind. `resolve`
asks the provider for its orders and takes what it says; only an order the provider answers it
has never seen is sent again, under the same id. It runs at start and, while `unsettled` says
an order was left without an answer, as soon as the provider answers again (the next heartbeat
or decision, see `Reconciler.settle`): an entry sent while the provider was being restarted
used to wait for the inspector's own next start, so it was never placed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal

from barfinex_cli.contracts.orders import OrderState
from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.errors import (
    BfxError,
    NotFound,
    RiskViolation,
    ServiceUnreachable,
    UsageError,
)
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.store.inspector import InspectorStore, LocalStatus, OrderRecord, OrderRole

log = logging.getLogger("bfx.inspector")

ROLE_TAG: dict[OrderRole, str] = {
    "entry": "e",
    "stop_loss": "sl",
    "take_profit": "tp",
    "close": "x",
}


def client_order_id(decision_id: str, role: OrderRole, generation: int = 1) -> str:
    """Return the one client order id of a decision's order of `role` (and `generation`).

    >>> client_order_id("0190e0a4-7c3b-7000-8000-000000000001", "entry")
    'i-0190e0a4-7c3b-7000-8000-000000000001-e'
    """
    tag = ROLE_TAG[role]
    suffix = tag if role == "entry" else f"{tag}{generation}"
    return f"i-{decision_id}-{suffix}"[:64]


def status_of(state: OrderState) -> LocalStatus:
    """Map the provider's order status onto the store's."""
    if state.status in ("open", "filled", "cancelled", "rejected"):
        return state.status
    return "open"


def merged(order: OrderRecord, state: OrderState, now_ms: int) -> OrderRecord:
    """Return `order` updated with what the provider says of it.

    Events can arrive after the answer that already reported more (a placing call returns the
    filled order before its `order.submitted` is read off the bus): a state that is behind the
    one held — less filled, or live where the order has settled — is ignored.

    A state that carries the order's fees (the paper broker's, an exchange's that reports
    them) gives them as read for its whole filled amount, so the fill audit need not wait for
    fill events that may never come (`events.order_changed`).
    """
    if state.filled < order.filled or (not order.live and status_of(state) == "open"):
        return order
    known = state.fees is not None
    return replace(
        order,
        status=status_of(state),
        amount=state.amount,
        filled=state.filled,
        average_price=state.average_price,
        updated_ms=now_ms,
        fees=state.fees if state.fees is not None else order.fees,
        fill_seen=max(order.fill_seen, state.filled) if known else order.fill_seen,
    )


class Executor:
    """Send, resolve and cancel orders of one account through the process's gateway client."""

    def __init__(self, client: GatewayClient, store: InspectorStore, account: str) -> None:
        self.client = client
        self.store = store
        self.account = account
        self.sent = 0
        """Place calls made (a retried call counts once)."""
        self.unsettled = True
        """An order may be in flight with no answer: `resolve` has work (true until it ran)."""

    async def submit(self, order: OrderRecord, now_ms: int) -> OrderRecord:
        """Write `order` as in-flight, send it, and return it as the provider answered.

        A refusal (a 409 or 422) marks it rejected. No answer (the provider unreachable, a
        timeout) leaves it in-flight for `resolve`; that is not an error here.
        """
        order = replace(order, status="in_flight", placed_ms=order.placed_ms or now_ms)
        known = self.store.order(order.client_order_id)
        if known is not None and not known.live:
            return known  # placed and settled before: never again
        self.store.save_order(order)
        return await self._send(order, now_ms)

    async def _send(self, order: OrderRecord, now_ms: int) -> OrderRecord:
        request = PlaceOrderRequest(
            client_order_id=order.client_order_id,
            account=self.account,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            amount=order.amount,
            price=order.price,
            stop_price=order.stop_price,
            reduce_only=order.reduce_only,
            decision_id=order.decision_id,
        )
        self.sent += 1
        try:
            placed = await self.client.place_order(request)
        except ServiceUnreachable as exc:
            self.unsettled = True
            log.warning(
                "order outcome unknown: kept in flight until the provider says",
                extra={"client_order_id": order.client_order_id, "error": str(exc)},
            )
            return order
        except (RiskViolation, UsageError) as exc:
            log.warning(
                "order refused by the provider",
                extra={"client_order_id": order.client_order_id, "error": str(exc)},
            )
            refused = replace(order, status="rejected", updated_ms=now_ms)
            self.store.save_order(refused)
            return refused
        except BfxError as exc:  # any other answer: the outcome is not known either
            self.unsettled = True
            log.warning(
                "order outcome unknown: kept in flight",
                extra={"client_order_id": order.client_order_id, "error": str(exc)},
            )
            return order
        updated = merged(order, placed.order, now_ms)
        self.store.save_order(updated)
        return updated

    async def resolve(self, now_ms: int) -> list[OrderRecord]:
        """Settle every in-flight order from the provider's own list; return those it changed.

        An order the provider holds takes its state. One the provider has never seen is sent
        again under the same id (which cannot double it).

        Raises:
            ServiceUnreachable: The provider did not answer; nothing changed.
        """
        flying = [o for o in self.store.orders(live_only=True) if o.status == "in_flight"]
        if not flying:
            self.unsettled = False
            return []
        asked = [o.client_order_id for o in flying]
        remote = {o.client_order_id: o for o in await self.client.orders(self.account, ids=asked)}
        changed: list[OrderRecord] = []
        self.unsettled = False  # a send below that gets no answer sets it again
        for order in flying:
            state = remote.get(order.client_order_id)
            if state is not None:
                updated = merged(order, state, now_ms)
                self.store.save_order(updated)
            else:
                updated = await self._send(order, now_ms)
            if updated.status != "in_flight":
                changed.append(updated)
        return changed

    async def cancel(self, client_order_id: str, now_ms: int) -> OrderRecord | None:
        """Cancel an order at the provider; return it as it then stands (None if unknown)."""
        order = self.store.order(client_order_id)
        try:
            state = await self.client.cancel_order(client_order_id)
        except ServiceUnreachable:
            raise
        except NotFound:  # the provider never got it: it must never be sent now
            if order is None:
                return None
            dropped = replace(order, status="cancelled", updated_ms=now_ms)
            self.store.save_order(dropped)
            return dropped
        except BfxError as exc:
            log.warning(
                "cancel refused", extra={"client_order_id": client_order_id, "error": str(exc)}
            )
            return order
        if order is None:
            return None
        updated = merged(order, state, now_ms)
        self.store.save_order(updated)
        return updated


def signed(side: str, amount: Decimal) -> Decimal:
    """Return `amount` signed by side: positive for a buy or a long."""
    return amount if side in ("buy", "long") else -amount
