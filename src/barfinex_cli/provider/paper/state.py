"""The paper engine's state as stored records, and the savepoint that makes a call all-or-nothing.

A broker call (place, cancel, a candle) changes orders, cash, positions and marks synchronously.
`Savepoint` captures, before the call, only what a call can change (the open orders, the ledger,
the marks and books, the length of the event queue), so that a call that fails half-way is undone
whole, and a call that succeeds is written to `paper.db` as just what it changed (`change`). The
capture costs O(open orders + positions + symbols), not O(every order ever placed).

`state_of` and `engine_of` convert the whole engine to and from `BrokerState`, the one shape of a
JSON snapshot and of what `BrokerStore.load` returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from itertools import islice

from barfinex_cli.contracts.orders import OrderFilled, OrderPartiallyFilled
from barfinex_cli.provider.paper.engine import Book, PaperEngine, PaperOrder
from barfinex_cli.provider.paper.fills import PaperConfig
from barfinex_cli.provider.paper.ledger import Ledger, Position
from barfinex_cli.store.broker import BrokerChange, BrokerState, FillRow, OrderRow, PositionRow


def order_row(order: PaperOrder) -> OrderRow:
    """Return an engine order as a stored record."""
    return OrderRow(
        state=order.state,
        status=order.status,
        seq=order.seq,
        triggered=order.triggered,
        notional=order.notional,
        fills=order.fills,
    )


def state_of(engine: PaperEngine, seq: int) -> BrokerState:
    """Return the whole engine (but its books) as a `BrokerState`."""
    ledger = engine.ledger
    return BrokerState(
        seq=seq,
        cash=ledger.cash,
        positions=[
            PositionRow(account=a, symbol=s, size=p.size, entry=p.entry, realised=p.realised)
            for a, held in ledger.positions.items()
            for s, p in held.items()
        ],
        orders=[order_row(o) for o in engine.orders.values()],
        last_price=engine.last,
        last_volume=engine.volume,
    )


def engine_of(state: BrokerState, config: PaperConfig, exchange: str) -> PaperEngine:
    """Return an engine carrying on from `state`, with empty books."""
    ledger = Ledger(config, {a: dict(held) for a, held in state.cash.items()})
    for account in ledger.cash:
        ledger.positions[account] = {}
    for p in state.positions:
        ledger.positions.setdefault(p.account, {})[p.symbol] = Position(p.size, p.entry, p.realised)
    engine = PaperEngine(config, exchange, ledger)
    for r in sorted(state.orders, key=lambda r: r.seq):
        engine.add(PaperOrder(r.state, r.status, r.seq, r.triggered, r.notional, r.fills))
    engine.last.update(state.last_price)
    engine.volume.update(state.last_volume)
    return engine


class Savepoint:
    """What one call may change, captured before it: undo it with `rollback`, diff with `change`.

    Closed orders never change again, so only open ones are copied; a call adds at most new
    orders, which are the ones inserted after `size` (dicts keep insertion order).
    """

    def __init__(self, engine: PaperEngine, seq: int) -> None:
        self.engine = engine
        self.seq = seq
        self.size = len(engine.orders)
        self.open = {cid: o.copy() for cid, o in engine.active.items()}
        self.cash = {a: dict(held) for a, held in engine.ledger.cash.items()}
        self.positions = {
            a: {s: Position(p.size, p.entry, p.realised) for s, p in held.items()}
            for a, held in engine.ledger.positions.items()
        }
        self.last = dict(engine.last)
        self.volume = dict(engine.volume)
        self.books: dict[str, Book] = dict(engine.books)
        self.pending = len(engine.pending)

    def _new_ids(self) -> list[str]:
        added = len(self.engine.orders) - self.size
        return list(islice(reversed(self.engine.orders), added))[::-1] if added > 0 else []

    def rollback(self) -> None:
        """Put the engine back as it was when the savepoint was taken."""
        engine = self.engine
        for cid in self._new_ids():
            del engine.orders[cid]
        engine.orders.update(self.open)
        engine.active = dict(self.open)
        engine.ledger.cash = self.cash
        engine.ledger.positions = self.positions
        for live, kept in ((engine.last, self.last), (engine.volume, self.volume)):
            live.clear()
            live.update(kept)
        engine.books.clear()
        engine.books.update(self.books)
        while len(engine.pending) > self.pending:
            engine.pending.pop()

    def change(self, seq: int, marks: Iterable[str] = ()) -> BrokerChange:
        """Return what changed since the savepoint, plus the marks of `marks` (set meanwhile)."""
        engine, ledger = self.engine, self.engine.ledger
        orders = [engine.orders[cid] for cid in self._new_ids()]
        orders += [engine.orders[c] for c, kept in self.open.items() if engine.orders[c] != kept]
        cash: dict[str, dict[str, Decimal]] = {}
        for account, held in ledger.cash.items():
            before = self.cash.get(account, {})
            for currency, amount in held.items():
                if before.get(currency) != amount:
                    cash.setdefault(account, {})[currency] = amount
        positions = [
            PositionRow(account=a, symbol=s, size=p.size, entry=p.entry, realised=p.realised)
            for a, held in ledger.positions.items()
            for s, p in held.items()
            if self.positions.get(a, {}).get(s) != p
        ]
        fills = [
            FillRow(
                client_order_id=p.order.client_order_id,
                account=p.order.account,
                symbol=p.order.symbol,
                side=p.order.side,
                fill=p.fill,
            )
            for p in islice(engine.pending, self.pending, None)
            if isinstance(p, OrderFilled | OrderPartiallyFilled)
        ]
        symbols = set(marks)
        symbols.update(s for s, v in engine.last.items() if self.last.get(s) != v)
        symbols.update(s for s, v in engine.volume.items() if self.volume.get(s) != v)
        return BrokerChange(
            seq=seq if seq != self.seq else None,
            cash=cash,
            positions=positions,
            orders=[order_row(o) for o in orders],
            fills=fills,
            marks={s: (engine.last.get(s), engine.volume.get(s)) for s in sorted(symbols)},
        )
