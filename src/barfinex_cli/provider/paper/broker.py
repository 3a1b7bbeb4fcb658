"""The paper broker: a simulated exchange over any market data source.

It implements the `Broker` protocol and emits order events identical in shape to a live broker's,
so every role downstream runs unchanged on paper. Market data comes in through `on_candle`,
`on_trade` and `on_book`; only closed candles of the drive timeframe match resting orders. This
module checks orders at placement and emits; matching lives in `engine.py`, prices in `fills.py`,
the account arithmetic in `ledger.py`, input bounds in `guard.py`, and the stored form of the
state in `state.py`. The model and its limits: `docs/paper.md`.

Every call that changes state runs synchronously inside a savepoint: it completes whole, is
written to the `BrokerStore` (when one is given), and only then are its events emitted; if any
step fails (arithmetic, the disk) the call is undone whole and nothing is emitted, so no input
can leave the broker half-changed. Events wait in one FIFO queue and leave in order, so an emit
callback that yields (or calls back into the broker) never sees a stale position follow a newer
one.

The events are a transactional outbox: each is wrapped in its envelope (its id fixed there)
and written to `paper.db` in the same transaction as the change it describes; the provider
reports what the bus took (`published`), which deletes those rows. A broker opened on a store
holding rows left by a provider that died before publishing them queues them again, under
their own ids, and `flush` hands them on; so an order the broker took, filled or cancelled is
on the bus even if the process was SIGKILLed between the commit and the publish, and a
re-publish of one the bus already had is ignored by id (consumers' deduplication, the audit
log's primary key).

All arithmetic runs in the wide decimal context `fills.CONTEXT`. The module runs past 400 lines
because placement, the protocol and resuming from the store all go through the one
savepoint-and-emit path (`_atomic`, `_flush`) that must stay in one place to stay right.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any, TypeVar

from barfinex_cli.contracts import codec
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderAccepted,
    OrderRejected,
    OrderState,
    OrderSubmitted,
    PositionChanged,
)
from barfinex_cli.contracts.rest import BrokerCapabilities
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.errors import BfxError, ConfigError, NotFound, TransientError, UsageError
from barfinex_cli.provider.connectors.base import OrderRequest
from barfinex_cli.provider.paper.engine import CancelBy, OrderStatus, PaperEngine, PaperOrder
from barfinex_cli.provider.paper.fills import CONTEXT, ZERO, PaperConfig, crossed
from barfinex_cli.provider.paper.guard import (
    bar_of,
    check_notional,
    check_opening,
    check_request,
    clean_levels,
    price_of,
)
from barfinex_cli.provider.paper.ledger import Ledger, cash_currency
from barfinex_cli.provider.paper.state import Savepoint, engine_of, state_of
from barfinex_cli.store.broker import (
    BrokerChange,
    BrokerState,
    BrokerStore,
    OrderRow,
    OutboxEvent,
)
from barfinex_cli.store.market import CandleRow, TradeRow

MARKS_EVERY_S = 5.0
"""The longest a last price waits to be written when no order or money change carries it."""

log = logging.getLogger("bfx.provider.paper")
T = TypeVar("T")
DEFAULT_ACCOUNTS: dict[str, dict[str, Decimal]] = {"paper": {"USDT": Decimal(10_000)}}
_CANCEL_BY: dict[str, CancelBy] = {
    "inspector": "inspector",
    "exchange": "exchange",
    "expiry": "expiry",
}
KEEP_CLOSED = 1_000
"""Closed orders a broker with a store keeps in memory, the most recent; from twice as many on,
the oldest are dropped and read back from the store when asked for (`_lookup`, `orders`), so the
memory of a long run does not grow by about 2 KB with every order it places."""
BookSide = Sequence[tuple[Decimal | float, Decimal | float]]
EmitEvent = Callable[[Envelope[Any]], Awaitable[None]]
"""Where the broker's events go, each wrapped in its envelope, in order (the provider's outbox)."""


class PaperBroker:
    """A simulated broker: market, limit, stop-market and stop-limit orders against market data.

    Args:
        emit: Where the order, position and balance events go, in order. Report the ones the bus
            took to `published`, or a store keeps them to publish again.
        exchange: The `exchange` field of every payload.
        source: The `source` of every event's envelope.
        accounts: Opening balances per account and currency; one account `paper` with 10,000 USDT
            by default. With a store, an account already stored keeps its stored balances.
        maker_fee_bps: Fee of fills that rested on the book, in basis points of notional.
        taker_fee_bps: Fee of fills that took liquidity.
        slippage_bps: How far a taker fill lands beyond the price it met.
        max_participation: The share of one candle's volume an order may fill per candle.
        drive_timeframe: The candle timeframe that matches resting orders; others are ignored.
        clock: The time of fills at placement and of balance snapshots; UTC now by default.
        store: Where the account persists (`paper.db`); the broker resumes what it holds and
            writes every change, with the events describing it, before emitting them, and keeps
            only open and recent closed orders in memory (`KEEP_CLOSED`). None (the default)
            keeps it in memory only, every order with it. The caller opens and closes the store.

    Raises:
        ConfigError: an opening balance that is negative, not finite, or absurdly large.
    """

    name = "paper"

    def __init__(
        self,
        emit: EmitEvent,
        *,
        exchange: str = "paper",
        source: str = "provider/paper",
        accounts: Mapping[str, Mapping[str, Decimal]] | None = None,
        maker_fee_bps: Decimal = Decimal(2),
        taker_fee_bps: Decimal = Decimal(5),
        slippage_bps: Decimal = Decimal(1),
        max_participation: Decimal | None = Decimal("0.1"),
        drive_timeframe: str = "1m",
        clock: Callable[[], datetime] | None = None,
        store: BrokerStore | None = None,
    ) -> None:
        self.exchange = exchange
        self.config = PaperConfig(
            maker_fee_bps=maker_fee_bps,
            taker_fee_bps=taker_fee_bps,
            slippage_bps=slippage_bps,
            max_participation=max_participation,
            drive_timeframe=drive_timeframe,
        )
        opening = {
            a: {c: Decimal(v) for c, v in held.items()}
            for a, held in (DEFAULT_ACCOUNTS if accounts is None else accounts).items()
        }
        for account, held in opening.items():
            for currency, value in held.items():
                problem = check_opening(account, currency, value)
                if problem is not None:
                    raise ConfigError(problem)
        self._engine = PaperEngine(self.config, exchange, Ledger.open(opening, self.config))
        self._emit = emit
        self.source = source
        self._queue: deque[Envelope[Any]] = deque()
        """Events committed and not yet handed to `emit`, oldest first."""
        self._unpublished: set[str] = set()
        """Ids of events in the store's outbox that the bus has not taken yet."""
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seq = 0
        self._draining = False
        self._store = store
        self._marks: set[str] = set()
        self._marks_saved = time.monotonic()
        """Symbols whose last price a trade moved since the last write to the store."""
        self._dropped = 0
        """Closed orders dropped from memory (`_forget_closed`): only then is the store read."""
        self._dropped_seq = 0
        """The highest `seq` of an order dropped from memory: every older order may be gone."""
        if store is not None:
            self._resume(store, opening)

    def _resume(self, store: BrokerStore, opening: Mapping[str, Mapping[str, Decimal]]) -> None:
        """Carry on from the store; open (and store) configured accounts it does not hold yet."""
        with localcontext(CONTEXT):
            state = _or_transient(store, store.load)
            if state is None:
                _or_transient(store, lambda: store.replace(state_of(self._engine, self._seq)))
                return
            self._engine = engine_of(state, self.config, self.exchange)
            self._seq = state.seq
            ledger = self._engine.ledger
            new = {a: dict(held) for a, held in opening.items() if a not in ledger.cash}
            for account, held in new.items():
                ledger.cash[account] = held
                ledger.positions[account] = {}
            if new:
                _or_transient(store, lambda: store.commit(BrokerChange(cash=new)))
            left = _or_transient(store, store.unpublished)
            self._queue.extend(codec.decode(row.event) for row in left)
            self._unpublished.update(row.id for row in left)
            self._forget_closed()
        log.info(
            "paper broker resumed from %s: %d orders, order sequence at %d, %d events to publish",
            store.path,
            len(state.orders),
            state.seq,
            len(left),
        )

    # -- market data --------------------------------------------------------------------------

    async def on_candle(self, symbol: str, timeframe: str, row: CandleRow, closed_ms: int) -> None:
        """Match resting orders of `symbol` against a closed candle (drive timeframe only).

        A candle with a price or volume that is not finite or out of bounds is ignored (logged),
        and so is one whose matching failed: the broker is then exactly as before the candle.
        """
        if timeframe != self.config.drive_timeframe:
            return
        try:
            bar = bar_of(row)
        except ValueError as exc:
            log.warning("paper broker ignored a %s candle: %s", symbol, exc)
            return
        engine = self._engine
        try:
            self._atomic(lambda: engine.candle(symbol, bar, from_ms(closed_ms)))
        except BfxError as exc:
            log.error("paper broker skipped a %s candle, nothing changed: %s", symbol, exc)
            return
        await self._flush()

    def on_trade(self, symbol: str, trade: TradeRow) -> None:
        """Take a public trade's price as the last price of `symbol`; ignore an unusable one."""
        try:
            self._engine.last[symbol] = price_of(trade.price)
        except ValueError as exc:
            log.warning("paper broker ignored a %s trade: %s", symbol, exc)
            return
        self._marks.add(symbol)

    def on_book(self, symbol: str, bids: BookSide, asks: BookSide) -> None:
        """Keep the latest book of `symbol`; taker orders walk it until the next drive candle.

        Levels with a price or amount that is not finite, not positive or out of bounds are
        dropped.
        """
        with localcontext(CONTEXT):
            book = (sorted(clean_levels(bids), reverse=True), sorted(clean_levels(asks)))
        self._engine.books[symbol] = book

    # -- the Broker protocol ------------------------------------------------------------------

    async def place(self, request: OrderRequest) -> OrderState:
        """Place an order; a `client_order_id` seen before returns that order, never a second.

        Raises:
            UsageError: A side, type, amount or price that cannot be an order at all (not finite,
                not above 0, beyond the bounds in `fills.py`); nothing is recorded or emitted.
                Every other refusal is an `order.rejected`.
            TransientError: the store could not write the order; nothing changed.
        """
        known = self._lookup(request.client_order_id)
        if known is not None:
            return known.state
        check_request(request)
        with localcontext(CONTEXT):
            check_notional(request, self._engine.mark(request.symbol))
        order = self._atomic(lambda: self._submit(request))
        await self._flush()
        return order.state

    async def cancel(self, client_order_id: str, reason: str = "user") -> OrderState:
        """Cancel an open order; an order already closed is returned as it stands, unchanged.

        `reason` names who cancels when it is `inspector`, `exchange` or `expiry`; any other
        reason is recorded as a cancel by the user.
        """
        order = self._order(client_order_id)
        if order.status == "open":
            engine, by = self._engine, _CANCEL_BY.get(reason, "user")
            self._atomic(lambda: engine.cancel(order, reason, by))
            await self._flush()
        return order.state

    async def orders(
        self,
        account: str | None = None,
        open_only: bool = False,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[OrderState]:
        """Return orders, oldest first; with `ids`, only those (an unknown id is left out).

        With `limit`, only the latest that many of them, still oldest first. A window that
        memory holds entirely is answered from it; otherwise only the window's rows are read
        from the store, never every order the run placed.
        """
        engine = self._engine
        found: Iterable[PaperOrder]
        if ids is not None:
            found = sorted(
                (o for cid in dict.fromkeys(ids) if (o := self._lookup(cid)) is not None),
                key=lambda o: o.seq,
            )
        elif open_only:
            found = engine.active.values()  # every open order is held, in placement order
        elif self._store is None or not self._dropped or self._holds_latest(account, limit):
            found = engine.orders.values()  # kept in placement order
        else:  # closed ones may have been dropped from memory: the store has them all
            store = self._store
            rows = _or_transient(store, lambda: store.orders(account, limit))
            held = engine.orders
            found = [held.get(r.state.client_order_id) or _paper_order(r) for r in rows]
        out = [
            o.state
            for o in found
            if account in (None, o.state.account) and (not open_only or o.status == "open")
        ]
        return out if limit is None else out[-limit:]

    def _holds_latest(self, account: str | None, limit: int | None) -> bool:
        """Say whether memory holds the latest `limit` orders of `account` (of all with None).

        No dropped order is newer than `_dropped_seq`, so once `limit` held orders of the
        account are newer than it, none of the latest `limit` was dropped.
        """
        if limit is None:
            return False
        newer = 0
        for order in reversed(self._engine.orders.values()):
            if order.seq <= self._dropped_seq:
                return False
            if account in (None, order.state.account):
                newer += 1
                if newer >= limit:
                    return True
        return False

    async def positions(self, account: str | None = None) -> list[PositionChanged]:
        """Return every position ever opened, per (account, symbol), marked to the last price."""
        ledger = self._engine.ledger
        with localcontext(CONTEXT):
            return [
                ledger.position_event(a, self.exchange, symbol, self._engine.mark(symbol))
                for a in sorted(ledger.positions)
                if account in (None, a)
                for symbol in sorted(ledger.positions[a])
            ]

    async def balances(self, account: str | None = None) -> list[BalanceUpdated]:
        """Return the balances of every account (or of one), stamped with the clock."""
        now = self._clock()
        accounts = sorted(self._engine.ledger.cash)
        with localcontext(CONTEXT):
            return [self._engine.balance(a, now) for a in accounts if account in (None, a)]

    def capabilities(self) -> BrokerCapabilities:
        """Return that the paper broker holds every order type, reduce-only included."""
        return BrokerCapabilities(
            broker=self.name, exchange=self.exchange, stop_orders=True, reduce_only=True,
            source="paper broker: stop-market, stop-limit, limit, reduce-only",
        )  # fmt: skip

    def order_status(self, client_order_id: str) -> OrderStatus:
        """Return open, filled, cancelled or rejected; raise `NotFound` for an unknown id."""
        return self._order(client_order_id).status

    # -- state --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Return the broker's state as JSON-ready data (see `restore`); books are not kept."""
        state = state_of(self._engine, self._seq)
        if self._store is not None and self._dropped:  # with the closed orders dropped
            store = self._store
            held = {r.state.client_order_id: r for r in state.orders}
            rows = _or_transient(store, store.orders)
            orders = [held.get(r.state.client_order_id, r) for r in rows]
            state = state.model_copy(update={"orders": orders})
        return state.model_dump(mode="json")

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace this broker's state with a `snapshot()`, validated first; books start empty.

        With a store, the stored account is replaced by it as well (fills included).
        """
        state = BrokerState.model_validate(data)
        with localcontext(CONTEXT):
            engine = engine_of(state, self.config, self.exchange)
        if self._store is not None:
            store = self._store
            _or_transient(store, lambda: store.replace(state))
        self._engine = engine
        self._seq = state.seq
        self._marks.clear()
        self._dropped = self._dropped_seq = 0
        self._forget_closed()

    def _save(self, change: BrokerChange) -> None:
        """Write a change; one that only moves last prices waits for the next write.

        A candle that fills nothing changes only the marks. Writing those per candle cost about
        0.3 ms each, a sixth of a full-speed replay, so they ride along with the next change that
        moves money or orders, or go out on their own after `MARKS_EVERY_S`. A crash loses at
        most that much of the last prices, which the next candle sets again.
        """
        assert self._store is not None
        if change.marks_only and time.monotonic() - self._marks_saved < MARKS_EVERY_S:
            self._marks.update(change.marks)
            return
        if not change.empty:
            self._store.commit(change)
        self._marks.clear()
        self._marks_saved = time.monotonic()

    def _atomic(self, apply: Callable[[], T]) -> T:
        """Run one state change whole: stored before its events leave, undone if any step fails.

        Raises:
            UsageError: the arithmetic failed (a number beyond what can be simulated).
            TransientError: the store could not write; the change is undone.
        """
        with localcontext(CONTEXT):
            save = Savepoint(self._engine, self._seq)
            try:
                result = apply()
                events = self._wrap(save.pending)
                if self._store is not None:
                    change = save.change(self._seq, self._marks)
                    if events:
                        kept = [
                            OutboxEvent(id=e.id, event=codec.encode(e).decode()) for e in events
                        ]
                        change = change.model_copy(update={"events": kept})
                    self._save(change)
                    self._unpublished.update(e.id for e in events)
            except BaseException as exc:
                save.rollback()
                self._seq = save.seq
                if isinstance(exc, ArithmeticError):
                    raise UsageError(
                        f"the paper broker cannot simulate this ({type(exc).__name__}); "
                        "nothing changed — give smaller amounts or prices"
                    ) from exc
                if isinstance(exc, sqlite3.Error) and self._store is not None:
                    raise _store_failed(self._store, exc) from exc
                raise
        pending = self._engine.pending
        while len(pending) > save.pending:
            pending.pop()
        self._queue.extend(events)
        self._forget_closed()
        return result

    def _forget_closed(self) -> None:
        """Drop the oldest closed orders from memory once twice `KEEP_CLOSED` are held.

        Only with a store, which has every order committed before this runs, and only between
        changes (a `Savepoint` counts on the orders a change adds being the last ones). Dropping
        down to `KEEP_CLOSED` at a time makes the scan's cost a constant per order placed.
        """
        engine = self._engine
        if self._store is None or len(engine.orders) - len(engine.active) <= 2 * KEEP_CLOSED:
            return
        closed = [cid for cid in engine.orders if cid not in engine.active]
        dropped = closed[: len(closed) - KEEP_CLOSED]
        # placement order, so the last one dropped is the newest
        self._dropped_seq = max(self._dropped_seq, engine.orders[dropped[-1]].seq)
        for cid in dropped:
            del engine.orders[cid]
        self._dropped += len(dropped)

    def _lookup(self, client_order_id: str) -> PaperOrder | None:
        """Return an order from memory, or a closed one read back from the store, or None."""
        order = self._engine.orders.get(client_order_id)
        if order is None and self._dropped and self._store is not None:
            store = self._store
            row = _or_transient(store, lambda: store.order(client_order_id))
            order = None if row is None else _paper_order(row)
        return order

    def _wrap(self, since: int) -> list[Envelope[Any]]:
        """Return the payloads the call queued (from `since` on) in envelopes, stamped now."""
        pending = self._engine.pending
        if len(pending) <= since:
            return []
        now = self._clock()
        return [make_event(p, source=self.source, ts=now) for p in list(pending)[since:]]

    # -- placement ----------------------------------------------------------------------------

    def _submit(self, request: OrderRequest) -> PaperOrder:
        """Record the order, check it, accept or reject it, and trade what is marketable now."""
        engine = self._engine
        self._seq += 1
        state = OrderState(
            client_order_id=request.client_order_id,
            account=request.account,
            exchange=self.exchange,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            amount=request.amount,
            price=request.price,
            stop_price=request.stop_price,
            reduce_only=request.reduce_only,
            decision_id=request.decision_id,
            status="submitted",
        )
        order = PaperOrder(state, "open", self._seq)
        engine.add(order)
        engine.pending.append(OrderSubmitted(order=state))
        amount = self.config.amount(request.amount)
        reason = self._invalid(state, amount)
        if reason is None and request.reduce_only:
            position = engine.ledger.position(state.account, state.symbol)
            amount = min(amount, position.closable_by(state.side))
            if amount == 0 and position.side == "flat":
                reason = f"reduce-only order but there is no {state.symbol} position to reduce"
            elif amount == 0:
                reason = f"reduce-only order would increase the {position.side} position"
        order.state = state.model_copy(update={"amount": amount})
        reason = reason or self._unaffordable(order)
        if reason is not None:
            engine.close(order, "rejected")
            order.state = state.model_copy(update={"status": "rejected"})
            engine.pending.append(OrderRejected(order=order.state, reason=reason, by="exchange"))
            return order
        order.state = order.state.model_copy(
            update={"order_id": f"{self.exchange}-{order.seq}", "status": "open"}
        )
        engine.pending.append(OrderAccepted(order=order.state))
        if state.stop_price is not None and state.type in ("stop_market", "stop_limit"):
            if not crossed(state.side, state.stop_price, engine.mark_or_raise(state.symbol)):
                return order
            order.triggered = True  # already beyond its stop: it triggers at once
        engine.take(order, self._clock())
        return order

    def _invalid(self, state: OrderState, amount: Decimal) -> str | None:
        """Return why an order cannot be placed at all, or None."""
        accounts = sorted(self._engine.ledger.cash)
        if state.account not in accounts:
            return f"unknown account {state.account!r}; paper accounts: {', '.join(accounts)}"
        if cash_currency(state.symbol) is None:
            return f"bad symbol {state.symbol!r}: expected BASE/QUOTE, e.g. BTC/USDT"
        if amount <= 0:
            return f"bad amount {state.amount:f}: must be at least {self.config.amount_step:f}"
        if state.type in ("limit", "stop_limit") and not state.price:
            return f"bad price: a {state.type} order needs a price greater than 0"
        if state.type in ("stop_market", "stop_limit") and not state.stop_price:
            return f"bad stop price: a {state.type} order needs a stop_price greater than 0"
        if self._engine.mark(state.symbol) is None:
            return f"no market data for {state.symbol} yet"
        return None

    def _unaffordable(self, order: PaperOrder) -> str | None:
        """Return why the account cannot pay for the order's opening part, or None."""
        required = self._engine.reserve(order)
        if required == 0:
            return None
        account, currency = order.state.account, cash_currency(order.state.symbol) or ""
        reserved = self._engine.reserved(account, skip=order).get(currency, ZERO)
        free = self._engine.ledger.free(account, currency, reserved)
        if required > free:
            return f"insufficient balance: needs {required} {currency}, free {free} {currency}"
        return None

    def _order(self, client_order_id: str) -> PaperOrder:
        order = self._lookup(client_order_id)
        if order is None:
            raise NotFound(f"no paper order with client_order_id {client_order_id!r}")
        return order

    async def flush(self) -> None:
        """Hand every event not handed on yet to `emit`: at start, those a dead provider left."""
        await self._flush()

    def published(self, events: Iterable[Envelope[Any]]) -> None:
        """Note that the bus took `events`; the store's outbox forgets the broker's among them.

        A failed write is logged, not raised: those events are only published again at the next
        start, under the same ids.
        """
        if not self._unpublished:
            return
        ids = [e.id for e in events if e.id in self._unpublished]
        if not ids or self._store is None:
            return
        try:
            self._store.published(ids)
        except sqlite3.Error as exc:
            log.warning("paper broker could not mark %d events published: %s", len(ids), exc)
            return
        self._unpublished.difference_update(ids)

    async def _flush(self) -> None:
        """Emit queued events in order; a re-entrant call leaves them to the running drain."""
        if self._draining:
            return
        self._draining = True
        queue = self._queue
        try:
            while queue:
                await self._emit(queue[0])
                queue.popleft()
        finally:
            self._draining = False


def _paper_order(row: OrderRow) -> PaperOrder:
    return PaperOrder(row.state, row.status, row.seq, row.triggered, row.notional, row.fills)


def _store_failed(store: BrokerStore, exc: BaseException) -> TransientError:
    return TransientError(
        f"the paper broker could not write {store.path} ({exc}); nothing changed — "
        "check the disk and that no other provider uses this data directory, then retry"
    )


def _or_transient(store: BrokerStore, call: Callable[[], T]) -> T:
    """Run a store call; a SQLite failure becomes a `TransientError` naming the file."""
    try:
        return call()
    except sqlite3.Error as exc:
        raise _store_failed(store, exc) from exc
