"""The paper broker: a simulated exchange over any market data source.

It implements the `Broker` protocol and emits order events identical in shape to a live broker's,
so every role downstream runs unchanged on paper. Market data comes in through `on_candle`,
`on_trade` and `on_book`; only closed candles of the drive timeframe match resting orders. This
module checks orders at placement and emits; matching lives in `paper_engine`, prices in
`paper_fills`, the account arithmetic in `paper_ledger`. The model and its limits: `docs/paper.md`.

State changes are synchronous and complete before any event is emitted; events wait in one FIFO
queue and leave in order, so an emit callback that yields (or calls back into the broker) never
sees a stale position follow a newer one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderAccepted,
    OrderRejected,
    OrderState,
    OrderSubmitted,
    PositionChanged,
)
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.contracts.types import Model
from barfinex_cli.errors import NotFound, UsageError
from barfinex_cli.provider.connectors.base import Emit, OrderRequest
from barfinex_cli.provider.paper.engine import (
    CancelBy,
    OrderStatus,
    PaperEngine,
    PaperOrder,
)
from barfinex_cli.provider.paper.fills import (
    ZERO,
    Bar,
    Level,
    PaperConfig,
    crossed,
    to_decimal,
)
from barfinex_cli.provider.paper.ledger import Ledger, LedgerSnapshot, cash_currency
from barfinex_cli.store.market import CandleRow, TradeRow

DEFAULT_ACCOUNTS: dict[str, dict[str, Decimal]] = {"paper": {"USDT": Decimal(10_000)}}
_CANCEL_BY: dict[str, CancelBy] = {
    "inspector": "inspector",
    "exchange": "exchange",
    "expiry": "expiry",
}
BookSide = Sequence[tuple[Decimal | float, Decimal | float]]


class OrderRecord(Model):
    """An order as stored in a snapshot, with the engine's private bookkeeping."""

    state: OrderState
    status: OrderStatus
    seq: int
    triggered: bool
    notional: Decimal
    fills: int


class PaperSnapshot(Model):
    """Everything a restarted paper broker needs to carry on (books are transient, not kept)."""

    version: Literal[1] = 1
    seq: int
    ledger: LedgerSnapshot
    orders: list[OrderRecord]
    last_price: dict[str, Decimal]
    last_volume: dict[str, Decimal]


class PaperBroker:
    """A simulated broker: market, limit, stop-market and stop-limit orders against market data.

    Args:
        emit: Where the order, position and balance payloads go, in order.
        exchange: The `exchange` field of every payload.
        accounts: Opening balances per account and currency; one account `paper` with 10,000 USDT
            by default.
        maker_fee_bps: Fee of fills that rested on the book, in basis points of notional.
        taker_fee_bps: Fee of fills that took liquidity.
        slippage_bps: How far a taker fill lands beyond the price it met.
        max_participation: The share of one candle's volume an order may fill per candle.
        drive_timeframe: The candle timeframe that matches resting orders; others are ignored.
        clock: The time of fills at placement and of balance snapshots; UTC now by default.
    """

    name = "paper"

    def __init__(
        self,
        emit: Emit,
        *,
        exchange: str = "paper",
        accounts: Mapping[str, Mapping[str, Decimal]] | None = None,
        maker_fee_bps: Decimal = Decimal(2),
        taker_fee_bps: Decimal = Decimal(5),
        slippage_bps: Decimal = Decimal(1),
        max_participation: Decimal | None = Decimal("0.1"),
        drive_timeframe: str = "1m",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.exchange = exchange
        self.config = PaperConfig(
            maker_fee_bps=maker_fee_bps,
            taker_fee_bps=taker_fee_bps,
            slippage_bps=slippage_bps,
            max_participation=max_participation,
            drive_timeframe=drive_timeframe,
        )
        ledger = Ledger.open(DEFAULT_ACCOUNTS if accounts is None else accounts, self.config)
        self._engine = PaperEngine(self.config, exchange, ledger)
        self._emit = emit
        self._clock = clock or (lambda: datetime.now(UTC))
        self._seq = 0
        self._draining = False

    # -- market data --------------------------------------------------------------------------

    async def on_candle(self, symbol: str, timeframe: str, row: CandleRow, closed_ms: int) -> None:
        """Match resting orders of `symbol` against a closed candle (drive timeframe only)."""
        if timeframe != self.config.drive_timeframe:
            return
        self._engine.candle(symbol, Bar.from_row(row), from_ms(closed_ms))
        await self._flush()

    def on_trade(self, symbol: str, trade: TradeRow) -> None:
        """Take a public trade's price as the last price of `symbol`."""
        self._engine.last[symbol] = to_decimal(trade.price)

    def on_book(self, symbol: str, bids: BookSide, asks: BookSide) -> None:
        """Keep the latest book of `symbol`; taker orders walk it until the next drive candle."""

        def clean(side: BookSide) -> list[Level]:
            levels = [(to_decimal(price), to_decimal(amount)) for price, amount in side]
            return [level for level in levels if level[1] > 0]

        self._engine.books[symbol] = (sorted(clean(bids), reverse=True), sorted(clean(asks)))

    # -- the Broker protocol ------------------------------------------------------------------

    async def place(self, request: OrderRequest) -> OrderState:
        """Place an order; a `client_order_id` seen before returns that order, never a second.

        Raises:
            UsageError: An amount or price that is negative or not a number (it cannot be
                represented as an order at all); every other refusal is an `order.rejected`.
        """
        known = self._engine.orders.get(request.client_order_id)
        if known is not None:
            return known.state
        for label, value in (
            ("amount", request.amount),
            ("price", request.price),
            ("stop price", request.stop_price),
        ):
            if value is not None and (not value.is_finite() or value < 0):
                raise UsageError(f"bad {label} {value}: give a positive number")
        order = self._submit(request)
        await self._flush()
        return order.state

    async def cancel(self, client_order_id: str, reason: str = "user") -> OrderState:
        """Cancel an open order; an order already closed is returned as it stands, unchanged.

        `reason` names who cancels when it is `inspector`, `exchange` or `expiry`; any other
        reason is recorded as a cancel by the user.
        """
        order = self._order(client_order_id)
        if order.status == "open":
            self._engine.cancel(order, reason, _CANCEL_BY.get(reason, "user"))
            await self._flush()
        return order.state

    async def orders(self, account: str | None = None, open_only: bool = False) -> list[OrderState]:
        """Return orders, oldest first."""
        return [
            o.state
            for o in sorted(self._engine.orders.values(), key=lambda o: o.seq)
            if account in (None, o.state.account) and (not open_only or o.status == "open")
        ]

    async def positions(self, account: str | None = None) -> list[PositionChanged]:
        """Return every position ever opened, per (account, symbol), marked to the last price."""
        ledger = self._engine.ledger
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
        return [self._engine.balance(a, now) for a in accounts if account in (None, a)]

    def order_status(self, client_order_id: str) -> OrderStatus:
        """Return open, filled, cancelled or rejected; raise `NotFound` for an unknown id."""
        return self._order(client_order_id).status

    # -- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Return the broker's state as JSON-ready data (see `restore`)."""
        engine = self._engine
        records = [
            OrderRecord(
                state=o.state,
                status=o.status,
                seq=o.seq,
                triggered=o.triggered,
                notional=o.notional,
                fills=o.fills,
            )
            for o in engine.orders.values()
        ]
        return PaperSnapshot(
            seq=self._seq,
            ledger=engine.ledger.snapshot(),
            orders=records,
            last_price=engine.last,
            last_volume=engine.volume,
        ).model_dump(mode="json")

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace this broker's state with a `snapshot()`, validated first; books start empty."""
        snap = PaperSnapshot.model_validate(data)
        engine = PaperEngine(self.config, self.exchange, Ledger.restore(snap.ledger, self.config))
        for r in snap.orders:
            engine.orders[r.state.client_order_id] = PaperOrder(
                r.state, r.status, r.seq, r.triggered, r.notional, r.fills
            )
        engine.last.update(snap.last_price)
        engine.volume.update(snap.last_volume)
        self._engine = engine
        self._seq = snap.seq

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
        engine.orders[state.client_order_id] = order
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
            order.status = "rejected"
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
            return f"bad amount {state.amount}: must be at least {self.config.amount_step:f}"
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
        order = self._engine.orders.get(client_order_id)
        if order is None:
            raise NotFound(f"no paper order with client_order_id {client_order_id!r}")
        return order

    async def _flush(self) -> None:
        """Emit queued payloads in order; a re-entrant call leaves them to the running drain."""
        if self._draining:
            return
        self._draining = True
        pending = self._engine.pending
        try:
            while pending:
                await self._emit(pending[0])
                pending.popleft()
        finally:
            self._draining = False
