"""The paper account model: cash per currency and one signed position per symbol.

The model is a fully collateralised, perp-like ledger (see `docs/paper.md`): a symbol `BASE/QUOTE`
(or `BASE/QUOTE:SETTLE`) trades against cash in its quote (settle) currency; buying opens or adds to
a long, selling opens or adds to a short; an open position locks its entry notional from the cash
(no leverage, no liquidation); realised PnL and fees move the cash. Kept apart from the broker so
that the arithmetic of positions can be read, and tested, on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    CurrencyBalance,
    OrderSide,
    PositionChanged,
    PositionSide,
)
from barfinex_cli.provider.paper.fills import ZERO, PaperConfig


def cash_currency(symbol: str) -> str | None:
    """Return the currency a symbol settles in (`BTC/USDT` -> USDT), or None if it is malformed."""
    base, sep, rest = symbol.partition("/")
    quote, _, settle = rest.partition(":")
    if not (sep and base and quote):
        return None
    return settle or quote


@dataclass(slots=True)
class Position:
    """One symbol's position: `size` is signed (long > 0 > short); `realised` is cumulative."""

    size: Decimal = ZERO
    entry: Decimal | None = None
    realised: Decimal = ZERO

    @property
    def side(self) -> PositionSide:
        """Return long, short or flat."""
        return "long" if self.size > 0 else "short" if self.size < 0 else "flat"

    def closable_by(self, side: OrderSide) -> Decimal:
        """Return how much an order of `side` can close (0 if it would add to the position)."""
        opposite = (self.size > 0 and side == "sell") or (self.size < 0 and side == "buy")
        return abs(self.size) if opposite else ZERO

    def fill(
        self, side: OrderSide, amount: Decimal, price: Decimal, config: PaperConfig
    ) -> Decimal:
        """Apply one fill; return the PnL it realised (closing part only, before fees)."""
        signed = amount if side == "buy" else -amount
        closing = min(amount, self.closable_by(side))
        if closing == 0:
            held = abs(self.size)
            self.entry = config.price(
                (held * (self.entry or ZERO) + amount * price) / (held + amount)
            )
            self.size += signed
            return ZERO
        assert self.entry is not None  # a non-zero position always has an entry price
        direction = 1 if self.size > 0 else -1
        realised = config.money(closing * (price - self.entry) * direction)
        self.realised += realised
        self.size += closing if side == "buy" else -closing
        opening = amount - closing
        if self.size == 0:
            self.entry = None
            if opening > 0:  # the fill flipped the position: the rest opens at this price
                self.size = opening if side == "buy" else -opening
                self.entry = price
        return realised

    def unrealised(self, mark: Decimal | None, config: PaperConfig) -> Decimal:
        """Return the PnL of the open size marked at `mark` (0 when flat or unmarked)."""
        if self.entry is None or mark is None:
            return ZERO
        return config.money((mark - self.entry) * self.size)


@dataclass(slots=True)
class Ledger:
    """Cash and positions of every paper account."""

    config: PaperConfig
    cash: dict[str, dict[str, Decimal]]
    positions: dict[str, dict[str, Position]] = field(default_factory=dict)

    @classmethod
    def open(cls, accounts: Mapping[str, Mapping[str, Decimal]], config: PaperConfig) -> Ledger:
        """Start a ledger with the given opening balances and no positions."""
        cash = {a: {c: Decimal(v) for c, v in held.items()} for a, held in accounts.items()}
        return cls(config, cash, {a: {} for a in cash})

    def position(self, account: str, symbol: str) -> Position:
        """Return the position of `symbol` (a flat one, not stored, if there is none)."""
        return self.positions.get(account, {}).get(symbol) or Position()

    def apply(
        self,
        account: str,
        symbol: str,
        side: OrderSide,
        amount: Decimal,
        price: Decimal,
        fee: Decimal,
    ) -> None:
        """Book one fill: move the position, credit the realised PnL, debit the fee."""
        currency = cash_currency(symbol)
        assert currency is not None  # orders with malformed symbols are rejected before this
        position = self.positions.setdefault(account, {}).setdefault(symbol, Position())
        realised = position.fill(side, amount, price, self.config)
        wallet = self.cash.setdefault(account, {})
        wallet[currency] = wallet.get(currency, ZERO) + realised - fee

    def margin(self, account: str) -> dict[str, Decimal]:
        """Return the cash locked by open positions (their entry notional), per currency."""
        locked: dict[str, Decimal] = {}
        for symbol, position in self.positions.get(account, {}).items():
            currency = cash_currency(symbol)
            if position.entry is not None and currency is not None:
                notional = abs(position.size) * position.entry
                locked[currency] = locked.get(currency, ZERO) + notional
        return locked

    def position_event(
        self, account: str, exchange: str, symbol: str, mark: Decimal | None
    ) -> PositionChanged:
        """Return the position of `symbol` as a `position.changed` payload, marked at `mark`."""
        position = self.position(account, symbol)
        return PositionChanged(
            account=account,
            exchange=exchange,
            symbol=symbol,
            side=position.side,
            size=abs(position.size),
            entry_price=position.entry,
            mark_price=mark,
            unrealised_pnl=position.unrealised(mark, self.config),
            realised_pnl=position.realised,
            pnl_currency=cash_currency(symbol) or symbol,
        )

    def balance_event(
        self, account: str, exchange: str, reserved: Mapping[str, Decimal], time: datetime
    ) -> BalanceUpdated:
        """Return an account's balances; `used` is position margin plus `reserved` for orders."""
        margin = self.margin(account)
        held = self.cash.get(account, {})
        balances: dict[str, CurrencyBalance] = {}
        for currency in sorted({*held, *margin, *reserved}):
            total = held.get(currency, ZERO)
            used = self.config.money(margin.get(currency, ZERO) + reserved.get(currency, ZERO))
            balances[currency] = CurrencyBalance(total=total, free=total - used, used=used)
        return BalanceUpdated(account=account, exchange=exchange, balances=balances, time=time)

    def free(self, account: str, currency: str, reserved: Decimal) -> Decimal:
        """Return the cash of `currency` not locked by positions nor `reserved` by orders."""
        total = self.cash.get(account, {}).get(currency, ZERO)
        return total - self.config.money(self.margin(account).get(currency, ZERO) + reserved)
