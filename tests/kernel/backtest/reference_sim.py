"""A plain per-candle loop of the detector-only rules, to check the vectorised one against.

Written the obvious way, one candle at a time with a position and a cash balance, so that
`ledger.simulate` (forward fills and cumulative products) can be compared with it on random
signals. Slow, and only for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Reference:
    """Fills as (bar, side, qty, price, fee, reason); equity at each close."""

    fee: float
    slip: float
    size: float
    reduce: float
    cash: float
    qty: float = 0.0
    fills: list[tuple[int, str, float, float, float, str]] = field(default_factory=list)
    trades: list[tuple[str, int, int, float, float, float, float, str]] = field(
        default_factory=list
    )
    entry: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)
    """bar, price, fee, quantity of the open position's entry."""

    def run(self, opens, closes, wants) -> list[float]:  # type: ignore[no-untyped-def]
        """`wants`: {candle index: (entry, close_long, close_short, reduce_long, reduce_short)}."""
        equity = []
        for j in range(len(closes)):
            want = wants.get(j - 1)
            if want is not None:
                self.act(j, float(opens[j]), *want)
            equity.append(self.cash + self.qty * float(closes[j]))
        return equity

    def act(self, j, price, entry, cl, cs, rl, rs) -> None:  # type: ignore[no-untyped-def]
        held = 1 if self.qty > 0 else -1 if self.qty < 0 else 0
        if (held == 1 and cl) or (held == -1 and cs):
            self.exit(j, price, abs(self.qty), "exit")
        elif (held == 1 and rl) or (held == -1 and rs):
            self.exit(j, price, abs(self.qty) * self.reduce, "reduce")
        held = 1 if self.qty > 0 else -1 if self.qty < 0 else 0
        if entry and held == -entry:
            self.exit(j, price, abs(self.qty), "flip")
            held = 0
        if entry and held == 0:
            p = price * (1 + self.slip * entry)
            q = self.cash * self.size / (p * (1 + self.fee))
            fee = q * p * self.fee
            self.cash -= entry * q * p + fee
            self.qty = entry * q
            self.entry = (j, p, fee, q)
            self.fills.append((j, "buy" if entry > 0 else "sell", q, p, fee, "entry"))

    def exit(self, j, price, q, reason) -> None:  # type: ignore[no-untyped-def]
        sign = 1 if self.qty > 0 else -1
        p = price * (1 - self.slip * sign)
        fee = q * p * self.fee
        self.cash += sign * q * p - fee
        self.fills.append((j, "sell" if sign > 0 else "buy", q, p, fee, reason))
        bar, pe, efee, q0 = self.entry
        share = efee * q / q0
        pnl = sign * (p - pe) * q - share - fee
        why = {"exit": "close"}.get(reason, reason)
        self.trades.append(("long" if sign > 0 else "short", bar, j, q, pe, p, pnl, why))
        left = abs(self.qty) - q
        self.qty = sign * left if left > 1e-12 * q else 0.0


def random_wants(rng: np.random.Generator, n: int, density: float) -> dict[int, tuple[int, ...]]:
    """Return random candle wants: entries of both sides, closes and reduces."""
    out: dict[int, tuple[int, ...]] = {}
    for i in np.flatnonzero(rng.random(n) < density):
        out[int(i)] = (
            int(rng.choice([-1, 0, 1])),
            bool(rng.random() < 0.3),
            bool(rng.random() < 0.3),
            bool(rng.random() < 0.2),
            bool(rng.random() < 0.2),
        )
    return out
