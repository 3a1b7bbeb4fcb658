"""The matching engine of the paper broker: orders, marks and books, with no IO and no awaits.

`PaperEngine` holds the open orders and the last market state of every symbol, matches orders as a
taker at placement and against closed candles afterwards, books fills in the ledger and queues the
resulting payloads in `pending` for the broker to emit in order. Every method runs to completion
without awaiting, so no event can describe a state that a concurrent call already changed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    Fill,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderState,
)
from barfinex_cli.contracts.types import Payload
from barfinex_cli.provider.paper.fills import (
    BPS,
    ZERO,
    Bar,
    Level,
    Liquidity,
    PaperConfig,
    better,
    marketable,
    stop_trigger,
    touched,
    walk_book,
)
from barfinex_cli.provider.paper.ledger import Ledger, cash_currency
from barfinex_cli.store.broker import PaperStatus

OrderStatus = PaperStatus
CancelBy = Literal["user", "inspector", "exchange", "expiry"]
Book = tuple[list[Level], list[Level]]
"""Bids (best first) and asks (best first)."""


@dataclass(slots=True)
class PaperOrder:
    """One order and the engine's bookkeeping of it; `notional` sums price x amount of fills."""

    state: OrderState
    status: OrderStatus
    seq: int
    triggered: bool = False
    notional: Decimal = ZERO
    fills: int = 0

    def copy(self) -> PaperOrder:
        """Return a copy (the state itself is immutable, so it is shared)."""
        return PaperOrder(
            self.state, self.status, self.seq, self.triggered, self.notional, self.fills
        )

    @property
    def remaining(self) -> Decimal:
        """Return the amount still to fill."""
        return self.state.amount - self.state.filled


@dataclass(slots=True)
class PaperEngine:
    """Open orders, marks and books of a paper exchange, and the payloads waiting to go out."""

    config: PaperConfig
    exchange: str
    ledger: Ledger
    orders: dict[str, PaperOrder] = field(default_factory=dict)
    """Every order ever placed, by client order id, in placement (seq) order."""
    active: dict[str, PaperOrder] = field(default_factory=dict)
    """The open ones among `orders` (the same objects), so matching never scans closed orders."""
    last: dict[str, Decimal] = field(default_factory=dict)
    """The last trade price or candle close per symbol."""
    volume: dict[str, Decimal] = field(default_factory=dict)
    """The volume of the last drive candle per symbol."""
    books: dict[str, Book] = field(default_factory=dict)
    pending: deque[Payload] = field(default_factory=deque)

    def add(self, order: PaperOrder) -> None:
        """Record a new order (open unless its status says otherwise)."""
        cid = order.state.client_order_id
        self.orders[cid] = order
        if order.status == "open":
            self.active[cid] = order

    def close(self, order: PaperOrder, status: OrderStatus) -> None:
        """Mark an order filled, cancelled or rejected; it never changes again."""
        order.status = status
        self.active.pop(order.state.client_order_id, None)

    def candle(self, symbol: str, bar: Bar, time: datetime) -> None:
        """Match resting orders of `symbol` against a closed drive candle, then mark to it."""
        for order in self.open_orders(symbol):
            if order.status == "open":  # an earlier fill may have cancelled a reduce-only order
                self.match(order, bar, time)
        self.last[symbol] = bar.close
        self.volume[symbol] = bar.volume
        self.books.pop(symbol, None)  # a book older than the last close is stale

    def reserve(self, order: PaperOrder) -> Decimal:
        """Return the cash an open order holds back: its opening part at a reference price."""
        state = order.state
        if state.reduce_only:
            return ZERO
        position = self.ledger.position(state.account, state.symbol)
        opening = max(ZERO, order.remaining - position.closable_by(state.side))
        if opening == 0:
            return ZERO
        if state.type in ("limit", "stop_limit") and state.price is not None:
            price, bps = state.price, self.config.taker_fee_bps
        else:
            pending_stop = state.type == "stop_market" and not order.triggered
            # a book-only symbol's book can run dry: the order's own average is then the reference
            touch = self.touch(state) or state.average_price or ZERO
            price = state.stop_price if pending_stop and state.stop_price else touch
            bps = self.config.taker_fee_bps + self.config.slippage_bps
        return self.config.money(opening * price * (1 + bps / BPS))

    def reserved(self, account: str, skip: PaperOrder | None = None) -> dict[str, Decimal]:
        """Return what the open orders of `account` (but `skip`) reserve, per currency."""
        out: dict[str, Decimal] = {}
        for order in self.active.values():
            if order.state.account == account and order is not skip:
                currency = cash_currency(order.state.symbol) or ""
                out[currency] = out.get(currency, ZERO) + self.reserve(order)
        return out

    def take(self, order: PaperOrder, time: datetime) -> None:
        """Trade an order now as a taker: walk the book, else take the last price (capped)."""
        state = order.state
        limit = state.price if state.type in ("limit", "stop_limit") else None
        allowed = self.allowed(order)
        book = self.books.get(state.symbol)
        levels = (book[1] if state.side == "buy" else book[0]) if book else []
        if levels:
            taken, left = walk_book(levels, state.side, allowed, limit)
            assert book is not None
            self.books[state.symbol] = (left, book[1]) if state.side == "sell" else (book[0], left)
            for level, amount in taken:
                price = self.config.slipped(level, state.side)
                price = better(state.side, limit, price) if limit else price
                self.fill(order, price, amount, "taker", time)
            if taken:
                self.settle(order, time)
            return
        last = self.mark_or_raise(state.symbol)
        if limit is not None and not marketable(state.side, limit, last):
            return
        price = self.config.slipped(last, state.side)
        cap = self.config.cap(self.volume.get(state.symbol))
        self.execute(
            order, better(state.side, limit, price) if limit else price, "taker", cap, time
        )

    def match(self, order: PaperOrder, bar: Bar, time: datetime) -> None:
        """Match one resting order against a closed candle of the drive timeframe."""
        state, cfg = order.state, self.config
        cap = cfg.cap(bar.volume)
        if state.type in ("stop_market", "stop_limit") and not order.triggered:
            assert state.stop_price is not None
            trigger = stop_trigger(state.side, state.stop_price, bar)
            if trigger is None:
                return
            order.triggered = True
            price = cfg.slipped(trigger, state.side)
            if state.type == "stop_market":
                self.execute(order, price, "taker", cap, time)
            elif state.price is not None and marketable(state.side, state.price, trigger):
                self.execute(order, better(state.side, state.price, price), "taker", cap, time)
            return  # a stop-limit not marketable at its trigger rests from the next candle on
        if state.type in ("market", "stop_market"):
            self.execute(order, cfg.slipped(bar.open, state.side), "taker", cap, time)
        elif state.price is not None and touched(state.side, state.price, bar):
            self.execute(order, state.price, "maker", cap, time)

    def execute(
        self,
        order: PaperOrder,
        price: Decimal,
        liquidity: Liquidity,
        cap: Decimal | None,
        time: datetime,
    ) -> None:
        """Fill what the order may take at `price`, at most `cap`, and settle the account."""
        amount = self.allowed(order)
        if cap is not None:
            amount = min(amount, cap)
        if amount > 0:
            self.fill(order, price, amount, liquidity, time)
            self.settle(order, time)

    def allowed(self, order: PaperOrder) -> Decimal:
        """Return the amount the order may fill now: a reduce-only one no more than it closes."""
        if not order.state.reduce_only:
            return order.remaining
        position = self.ledger.position(order.state.account, order.state.symbol)
        return min(order.remaining, position.closable_by(order.state.side))

    def fill(
        self,
        order: PaperOrder,
        price: Decimal,
        amount: Decimal,
        liquidity: Liquidity,
        time: datetime,
    ) -> None:
        """Book one fill: order state, ledger, and the `partially_filled` or `filled` event."""
        state = order.state
        fee = self.config.fee(price * amount, liquidity)
        order.fills += 1
        order.notional += price * amount
        filled = state.filled + amount
        order.state = state = state.model_copy(
            update={
                "filled": filled,
                "average_price": self.config.price(order.notional / filled),
                "status": "filled" if filled >= state.amount else "open",
                "fees": (state.fees or Decimal(0)) + fee,
            }
        )
        self.ledger.apply(state.account, state.symbol, state.side, amount, price, fee)
        fill = Fill(
            trade_id=f"{state.order_id}-{order.fills}",
            price=price,
            amount=amount,
            fee=fee,
            fee_currency=cash_currency(state.symbol) or "",
            liquidity=liquidity,
            time=time,
        )
        if order.remaining > 0:
            self.pending.append(OrderPartiallyFilled(order=state, fill=fill))
        else:
            self.close(order, "filled")
            self.pending.append(OrderFilled(order=state, fill=fill))

    def settle(self, order: PaperOrder, time: datetime) -> None:
        """After fills: report the position, cancel stranded reduce-only orders, report balances."""
        account, symbol = order.state.account, order.state.symbol
        self.pending.append(
            self.ledger.position_event(account, self.exchange, symbol, self.mark(symbol))
        )
        for other in self.open_orders(symbol):
            if (
                other.state.reduce_only
                and other.state.account == account
                and not self.allowed(other)
            ):
                self.cancel(other, "reduce-only: the position is closed", "exchange")
        self.pending.append(self.balance(account, time))

    def cancel(self, order: PaperOrder, reason: str, by: CancelBy) -> None:
        """Close an open order unfilled (or part-filled) and queue `order.cancelled`."""
        self.close(order, "cancelled")
        order.state = order.state.model_copy(update={"status": "cancelled"})
        self.pending.append(OrderCancelled(order=order.state, reason=reason, by=by))

    def open_orders(self, symbol: str) -> list[PaperOrder]:
        """Return the open orders of `symbol`, oldest first."""
        return [o for o in self.active.values() if o.state.symbol == symbol]

    def mark(self, symbol: str) -> Decimal | None:
        """Return the last trade or close, else the book's mid (or its one side), else None."""
        if symbol in self.last:
            return self.last[symbol]
        bids, asks = self.books.get(symbol, ([], []))
        if bids and asks:
            return self.config.price((bids[0][0] + asks[0][0]) / 2)
        best = bids or asks
        return best[0][0] if best else None

    def mark_or_raise(self, symbol: str) -> Decimal:
        """Return `mark(symbol)`, which placement checks made sure exists."""
        mark = self.mark(symbol)
        if mark is None:  # placement checks for market data first; this is a broken invariant
            raise RuntimeError(f"no market data for {symbol}")
        return mark

    def touch(self, state: OrderState) -> Decimal | None:
        """Return the price a taker would meet now: the best opposite level, else the mark."""
        book = self.books.get(state.symbol)
        levels = (book[1] if state.side == "buy" else book[0]) if book else []
        return levels[0][0] if levels else self.mark(state.symbol)

    def balance(self, account: str, time: datetime) -> BalanceUpdated:
        """Return the balances of `account` with margin and order reservations as `used`."""
        return self.ledger.balance_event(account, self.exchange, self.reserved(account), time)
