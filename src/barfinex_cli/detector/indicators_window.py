"""Indicator nodes that remember: smoothing, sliding sums and deviations, extremes, sessions.

Each keeps O(1) state live and is written, on the vectorised side, as the same recurrence polars
runs sequentially: `ewm_mean(adjust=False)` for exponential smoothing, `cum_sum` over per-candle
increments for sliding windows (a window sum is the running sum of `x[t] - x[t-n]`, exactly what
the live side adds), so both sides perform identical float operations in identical order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Literal

from barfinex_cli.detector.indicators_core import Frame, Node, Update, Value, num_input, pl_gt

if TYPE_CHECKING:
    import polars as pl

DAY_MS = 86_400_000


def _period(n: object, what: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{what}: the period must be a whole number of candles >= 1, not {n!r}")
    return n


class Smooth(Node):
    """Exponential smoothing seeded with the mean of the first `n` values (EMA, Wilder's RMA).

    y = sum(first n) * (1 / n) at the n-th defined input, then y += alpha * (x - y). Means here
    multiply by the reciprocal because polars divides by a scalar that way.
    """

    def __init__(self, x: Node, n: int, alpha: float, *, label: str | None = None) -> None:
        n = _period(n, label or "smoothing")
        super().__init__(
            (num_input(x, "smoothed"),),
            (n, alpha),
            x.lookback + n - 1,
            finite=x.finite,
            label=label,
        )
        self.n, self.alpha = n, alpha

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        (x,) = ins
        first, seed_at = self.children[0].lookback, self.lookback
        if at.height <= seed_at:
            return pl.repeat(None, at.height, dtype=pl.Float64)
        seed = x.slice(first, self.n).fill_null(0.0).cum_sum().last() * (1.0 / self.n)
        # the same as ewm over [null] * seed_at + [seed] + x[seed_at + 1:], without a `when`
        body = seed.append(x.slice(seed_at + 1)).ewm_mean(alpha=self.alpha, adjust=False)
        return pl.repeat(None, seed_at, dtype=pl.Float64).append(body) if seed_at else body

    def state(self) -> Update:
        first, seed_at, n, alpha = self.children[0].lookback, self.lookback, self.n, self.alpha
        t, total = -1, 0.0
        y: float | None = None

        def update(x: Value) -> Value:
            nonlocal t, total, y
            t += 1
            if t <= seed_at:
                if t >= first:
                    total = total + (0.0 if x is None else x)
                if t < seed_at:
                    return None
                y = total * (1.0 / n)
                return y
            if x is None or y is None:
                return None
            y = y + alpha * (x - y)
            return y

        return update


class _Rolling(Node):
    """A statistic `how` of the last `n` values of one numeric input."""

    def __init__(self, x: Node, n: int, how: str, *, label: str | None = None) -> None:
        n = _period(n, label or f"rolling {how}")
        super().__init__(
            (num_input(x, f"in a rolling {how}"),),
            (n, how),
            x.lookback + n - 1,
            finite=x.finite,
            label=label,
        )
        self.n, self.how = n, how


class Window(_Rolling):
    """The sum or mean of the last `n` values."""

    def __init__(
        self, x: Node, n: int, how: Literal["sum", "mean"], *, label: str | None = None
    ) -> None:
        super().__init__(x, n, how, label=label)

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        filled = ins[0].fill_null(0.0)
        total = (filled - filled.shift(self.n, fill_value=0.0)).cum_sum()
        out = total * (1.0 / self.n) if self.how == "mean" else total
        return pl.when(at.idx >= self.lookback).then(out)

    def state(self) -> Update:
        n, start, mean = self.n, self.lookback, self.how == "mean"
        ring = [0.0] * n
        t, pos, total = -1, 0, 0.0

        def update(x: Value) -> Value:
            nonlocal t, pos, total
            t += 1
            f = 0.0 if x is None else x
            old = ring[pos]
            ring[pos] = f
            pos = (pos + 1) % n
            total = total + (f - old)
            if t < start:
                return None
            return total * (1.0 / n) if mean else total

        return update


class Stdev(Node):
    """Population standard deviation of the last `n` values (sliding Welford update).

    M2 grows by (x - m_prev)(x - m) while the window fills, then by
    (x - x_old)((x - m) + (x_old - m_prev)) per slide; std = sqrt(max(M2 / n, 0)).
    """

    def __init__(self, x: Node, n: int, *, label: str | None = None) -> None:
        n = _period(n, label or "stdev")
        super().__init__(
            (num_input(x, "in a deviation"),),
            (n,),
            x.lookback + n - 1,
            finite=x.finite,
            label=label,
        )
        self.n = n

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        n, first = self.n, self.children[0].lookback
        f = ins[0].fill_null(0.0)
        old = f.shift(n, fill_value=0.0)
        j = at.idx - first
        m = (f - old).cum_sum() / pl.when(j + 1 < n).then(j + 1).otherwise(n).cast(pl.Float64)
        mp = pl.when(j > 0).then(m.shift(1)).otherwise(0.0)
        term = (
            pl.when(j < 0)
            .then(0.0)
            .when(j < n)
            .then((f - mp) * (f - m))
            .otherwise((f - old) * ((f - m) + (old - mp)))
        )
        var = term.cum_sum() * (1.0 / n)
        return pl.when(j >= n - 1).then(pl.when(var < 0.0).then(0.0).otherwise(var).sqrt())

    def state(self) -> Update:
        import math

        n, first = self.n, self.children[0].lookback
        ring = [0.0] * n
        t, pos, total, mp, m2 = -1, 0, 0.0, 0.0, 0.0

        def update(x: Value) -> Value:
            nonlocal t, pos, total, mp, m2
            t += 1
            f = 0.0 if x is None else x
            old = ring[pos]
            ring[pos] = f
            pos = (pos + 1) % n
            total = total + (f - old)
            j = t - first
            if j < 0:
                m2 = m2 + 0.0
                return None
            m = total / float(min(j + 1, n))
            term = (f - mp) * (f - m) if j < n else (f - old) * ((f - m) + (old - mp))
            mp = m
            m2 = m2 + term
            if j < n - 1:
                return None
            var = m2 * (1.0 / n)
            return math.sqrt(0.0 if var < 0.0 else var)

        return update


class Extreme(_Rolling):
    """The highest or lowest of the last `n` values (NaN if the window holds one, as polars)."""

    def __init__(
        self, x: Node, n: int, how: Literal["max", "min"], *, label: str | None = None
    ) -> None:
        super().__init__(x, n, how, label=label)

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        return ins[0].rolling_max(self.n) if self.how == "max" else ins[0].rolling_min(self.n)

    def state(self) -> Update:
        n, is_max = self.n, self.how == "max"
        window: deque[tuple[int, float]] = deque()
        t, last_null, last_nan = -1, -(10**18), -(10**18)

        def update(x: Value) -> Value:
            nonlocal t, last_null, last_nan
            t += 1
            if x is None:
                last_null = t
            elif x != x:
                last_nan = t
            else:
                while window and (window[-1][1] <= x if is_max else window[-1][1] >= x):
                    window.pop()
                window.append((t, x))
            while window and window[0][0] <= t - n:
                window.popleft()
            if t < n - 1 or last_null > t - n:
                return None
            if last_nan > t - n or not window:
                return float("nan")
            return window[0][1]

        return update


class TrueRange(Node):
    """max(high - low, |high - previous close|, |low - previous close|); from the 2nd candle.

    Computed as max(high, previous close) - min(low, previous close): for a candle with
    high >= low that is the same single subtraction the three-way max picks, so the same float,
    in fewer passes. It reads candle columns only, which both engines check are finite.
    """

    def __init__(self, high: Node, low: Node, close: Node, *, label: str | None = None) -> None:
        kids = (high, low, close)
        super().__init__(kids, (), max(k.lookback for k in kids) + 1, label=label)

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        h, lo, c = ins
        pc = c.shift(1)
        tr = h.clip(lower_bound=pc) - lo.clip(upper_bound=pc)
        return pl.when(at.idx >= self.lookback).then(tr)

    def state(self) -> Update:
        start = self.lookback
        t, prev = -1, 0.0

        def update(h: Value, lo: Value, c: Value) -> Value:
            nonlocal t, prev
            t += 1
            pc, prev = prev, c  # type: ignore[assignment]
            if t < start or h is None or lo is None:
                return None
            return max(h, pc) - min(lo, pc)

        return update


class DirectionalMove(Node):
    """Wilder's +DM (`side` "plus") or -DM ("minus"): the larger move beyond the last candle."""

    def __init__(self, high: Node, low: Node, side: Literal["plus", "minus"]) -> None:
        super().__init__((high, low), (side,), max(high.lookback, low.lookback) + 1)
        self.side = side

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        h, lo = ins
        up, down = h - h.shift(1), lo.shift(1) - lo
        a, b = (up, down) if self.side == "plus" else (down, up)
        # null on the first candle (no previous high/low), like the live side
        return pl.when((a > b) & (a > 0.0)).then(a).when(a.is_not_null()).then(0.0)

    def state(self) -> Update:
        start, plus = self.lookback, self.side == "plus"
        t, ph, pl_ = -1, 0.0, 0.0

        def update(h: Value, lo: Value) -> Value:
            nonlocal t, ph, pl_
            t += 1
            up, down = h - ph, pl_ - lo  # type: ignore[operator]
            ph, pl_ = h, lo  # type: ignore[assignment]
            if t < start:
                return None
            a, b = (up, down) if plus else (down, up)
            return a if pl_gt(a, b) and pl_gt(a, 0.0) else 0.0

        return update


class SessionSum(Node):
    """The running sum since the start of the candle's UTC day."""

    def __init__(self, x: Node, open_ms: Node, *, label: str | None = None) -> None:
        super().__init__(
            (num_input(x, "summed"), open_ms), (), x.lookback, finite=x.finite, label=label
        )

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        x, open_ms = ins
        return x.cum_sum().over(open_ms // DAY_MS)

    def state(self) -> Update:
        day, total = None, 0.0

        def update(x: Value, open_ms: Value) -> Value:
            nonlocal day, total
            today = open_ms // DAY_MS  # type: ignore[operator]
            if today != day:
                day, total = today, 0.0
            if x is None:
                return None
            total = total + x
            return total

        return update
