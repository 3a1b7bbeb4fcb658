"""Element-wise nodes: arithmetic, ratios, comparisons, three-valued logic, and the shift.

Each mirrors on the live side exactly what its polars expression does, including polars' choices
where IEEE or Python differ: a division never raises, NaN sorts above every number inside a
`when`, a null condition takes the `otherwise` branch, `&`/`|` are Kleene logic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from barfinex_cli.detector.indicators_core import (
    Const,
    Frame,
    Node,
    Update,
    Value,
    ieee_div,
    num_input,
    pl_gt,
)

if TYPE_CHECKING:
    import polars as pl

_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": ieee_div,
}


class Arith(Node):
    """`a + b`, `a - b`, `a * b`, `a / b` (division by zero gives ±inf or NaN, as in polars).

    Division by a constant is multiplication by its reciprocal on both sides: polars divides a
    column by a scalar that way, so this is the one order both can share.
    """

    def __init__(self, op: str, a: Node, b: Node, *, label: str | None = None) -> None:
        role = f"in {op}"
        kids = (num_input(a, role), num_input(b, role))
        safe = a.finite and b.finite and op != "/"
        super().__init__(kids, (op,), max(a.lookback, b.lookback), finite=safe, label=label)
        self.op = op
        self.recip = ieee_div(1.0, b.value) if op == "/" and isinstance(b, Const) else None

    def describe(self) -> str:
        return f"({self.children[0]} {self.op} {self.children[1]})"

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        a, b = ins
        if self.recip is not None:
            return a * pl.lit(self.recip, dtype=pl.Float64)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[self.op]

    def state(self) -> Update:
        fn = _ARITH[self.op]
        if (recip := self.recip) is not None:
            return lambda a, _b: None if a is None else a * recip

        def update(a: Value, b: Value) -> Value:
            if a is None or b is None:
                return None
            return fn(a, b)

        return update


class Unary(Node):
    """`-x`, `abs(x)`, or `pos(x)`: x where x > 0 else 0 (polars' NaN > 0 included)."""

    def __init__(self, op: str, x: Node, *, label: str | None = None) -> None:
        super().__init__(
            (num_input(x, f"in {op}"),), (op,), x.lookback, finite=x.finite, label=label
        )
        self.op = op

    def describe(self) -> str:
        return f"-{self.children[0]}" if self.op == "neg" else super().describe()

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        (x,) = ins
        if self.op == "pos":  # a null condition would take `otherwise`: keep null as null
            return pl.when(x <= 0.0).then(0.0).otherwise(x)
        return -x if self.op == "neg" else x.abs()

    def state(self) -> Update:
        op = self.op

        def update(x: Value) -> Value:
            if x is None:
                return None
            if op == "pos":
                return x if pl_gt(x, 0.0) else 0.0
            return -x if op == "neg" else abs(x)

        return update


class SafeDiv(Node):
    """`a / b`, or `fallback` where `b` is zero (an undefined ratio given a chosen meaning)."""

    def __init__(self, a: Node, b: Node, fallback: Node, *, label: str | None = None) -> None:
        kids = (
            num_input(a, "in a ratio"),
            num_input(b, "in a ratio"),
            num_input(fallback, "as a fallback"),
        )
        look = max(k.lookback for k in kids)
        super().__init__(kids, (), look, finite=all(k.finite for k in kids), label=label)

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        a, b, fallback = ins
        return pl.when(b == 0.0).then(fallback).otherwise(a / b)

    def state(self) -> Update:
        def update(a: Value, b: Value, fallback: Value) -> Value:
            if b is None:
                return None
            if b == 0.0:
                return fallback
            return None if a is None else ieee_div(a, b)

        return update


_CMP: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class Compare(Node):
    """A comparison; null while either side is null, NaN or infinite, so a rule on it does not hold.

    An infinite value comes from a division by zero: it is as undefined as NaN, and attribution
    reports both as None, so neither may make a rule hold.
    """

    def __init__(self, op: str, a: Node, b: Node) -> None:
        kids = (num_input(a, f"with {op}"), num_input(b, f"with {op}"))
        super().__init__(kids, (op,), max(a.lookback, b.lookback), kind="bool")
        self.op = op
        self.guard = not (a.finite and b.finite)

    def describe(self) -> str:
        return f"{self.children[0]} {self.op} {self.children[1]}"

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        a, b = ins
        out = {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "==": a == b, "!=": a != b}
        if not self.guard:
            return out[self.op]
        return pl.when(a.is_finite() & b.is_finite()).then(out[self.op])

    def state(self) -> Update:
        fn, guard, isfinite = _CMP[self.op], self.guard, math.isfinite

        def update(a: Value, b: Value) -> Value:
            if a is None or b is None or (guard and not (isfinite(a) and isfinite(b))):
                return None
            return fn(a, b)

        return update


class Logic(Node):
    """`a & b`, `a | b`, `~a` on conditions, with polars' three-valued (Kleene) logic."""

    def __init__(self, op: str, a: Node, b: Node | None = None) -> None:
        kids = (a,) if b is None else (a, b)
        for kid in kids:
            if kid.kind != "bool":
                raise TypeError(
                    f"{op} combines conditions, but {kid} is a number; compare it first, "
                    "e.g. ta.rsi(14) > 70"
                )
        super().__init__(kids, (op,), max(k.lookback for k in kids), kind="bool")
        self.op = op

    def describe(self) -> str:
        if self.op == "~":
            return f"~({self.children[0]})"
        return f"({self.children[0]}) {self.op} ({self.children[1]})"

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        if self.op == "~":
            return ~ins[0]
        return ins[0] & ins[1] if self.op == "&" else ins[0] | ins[1]

    def state(self) -> Update:
        if self.op == "~":
            return lambda a: None if a is None else not a
        if self.op == "&":

            def both(a: Value, b: Value) -> Value:
                if a is False or b is False:
                    return False
                return None if a is None or b is None else True

            return both

        def either(a: Value, b: Value) -> Value:
            if a is True or b is True:
                return True
            return None if a is None or b is None else False

        return either


class Shift(Node):
    """The value `n` candles ago."""

    def __init__(self, x: Node, n: int, *, label: str | None = None) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(
                f"shift({x}, {n}) would read the future or the present; shift by n >= 1"
            )
        super().__init__((x,), (n,), x.lookback + n, kind=x.kind, finite=x.finite, label=label)
        self.n = n

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        return ins[0].shift(self.n)

    def state(self) -> Update:
        n = self.n
        ring: list[Value] = [None] * n
        pos = 0

        def update(x: Value) -> Value:
            nonlocal pos
            out = ring[pos]
            ring[pos] = x
            pos = (pos + 1) % n
            return out

        return update
