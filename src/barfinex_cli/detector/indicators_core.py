"""Indicator nodes: one definition, two evaluations that agree bit for bit.

Every node has a polars expression (`expr`, for scans and backtests over a whole frame) and an
incremental state (`state().update`, for the live engine, O(1) per closed candle). The two are
written side by side with the same floating-point operations in the same order, so their values
are equal, not merely close. Where polars decides a detail (NaN orders above every number in a
comparison, `cum_sum` folds from `0.0`, `ewm_mean(adjust=False)` is `y + alpha * (x - y)`), the
incremental side copies it; `tests/detector/test_equivalence.py` proves the agreement.

Invariant: a numeric node is null for its first `lookback` candles and defined after; only
boolean nodes (a comparison whose input is NaN or infinite) are null in the middle of a series.

This module holds the base class and the leaves (columns, constants, raw expressions); the
element-wise nodes live in `indicators_ops.py`, windows and recurrences in
`indicators_window.py`, the public vocabulary in `indicators.py`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    import polars as pl

Kind = Literal["num", "bool"]
Value = float | bool | int | None
Update = Callable[..., Value]
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "buy_volume", "sell_volume", "trades")
FLOW_COLUMNS = ("buy_volume", "sell_volume")


class Frame(NamedTuple):
    """What a node's expression may know of the frame it is computed over."""

    idx: pl.Expr
    """The row number (Int64 from 0)."""
    height: int


class MissingColumn(Exception):
    """A candle lacks a column an indicator reads."""

    def __init__(self, column: str) -> None:
        hint = (
            "order-flow indicators need candles built from trades, with buy_volume and "
            "sell_volume columns"
            if column in FLOW_COLUMNS
            else f"give candles with a {column} column"
        )
        super().__init__(f"the candles have no {column} column; {hint}")
        self.column = column


class VectorOnly(Exception):
    """A node with no incremental form (`ta.raw`)."""


def ieee_div(a: float, b: float) -> float:
    """Divide like polars and IEEE 754: x/0 is ±inf, 0/0 is NaN, never an exception."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def pl_gt(a: float, b: float) -> bool:
    """`a > b` as polars compares floats: NaN is above every number and equal to NaN."""
    if a != a:
        return b == b
    return b == b and a > b


class Node(ABC):
    """One indicator or condition: a polars expression and an incremental state.

    Attributes:
        children: The nodes whose values this one reads.
        params: What makes this node itself (period, operator, ...), part of its identity.
        lookback: How many leading candles are null (the candle index it is first defined at).
        finite: Whether finite candles always give finite (or null) values here.
        label: The name shown in attributions (None for internal plumbing).
        key: Structural identity; equal keys are computed once per evaluation.
    """

    def __init__(
        self,
        children: tuple[Node, ...],
        params: tuple[Any, ...],
        lookback: int,
        *,
        kind: Kind = "num",
        arity: int | None = None,
        finite: bool = True,
        label: str | None = None,
    ) -> None:
        self.kind: Kind = kind
        self.arity = len(children) if arity is None else arity
        self.children = children
        self.params = params
        self.lookback = lookback
        self.finite = finite
        self.label = label
        self.key: tuple[Any, ...] = (type(self).__name__, params, tuple(c.key for c in children))

    def describe(self) -> str:
        """Return the structural text of this node (used when it has no label)."""
        inner = ", ".join([*map(str, self.children), *map(str, self.params)])
        return f"{type(self).__name__.lower()}({inner})"

    def __str__(self) -> str:
        return self.label or self.describe()

    def __repr__(self) -> str:
        return f"<{self.kind} {self}>"

    @abstractmethod
    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        """Return the vectorised form over the children's columns in a frame like `at`."""

    @abstractmethod
    def state(self) -> Update:
        """Return a fresh incremental update: children's values in, this node's value out."""

    def walk(self) -> list[Node]:
        """Return this node and every node below it (children first, duplicates kept)."""
        found: list[Node] = []
        for child in self.children:
            found += child.walk()
        return [*found, self]

    # -- operators: building conditions reads like arithmetic --------------------------------

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self} is evaluated per candle and has no truth value here: combine conditions "
            "with & | ~ (not and/or/not) and write a < x < b as (x > a) & (x < b)"
        )

    def _cmp(self, op: str, other: object) -> Node:
        from barfinex_cli.detector.indicators_ops import Compare

        return Compare(op, self, as_node(other))

    def _arith(self, op: str, a: object, b: object) -> Node:
        from barfinex_cli.detector.indicators_ops import Arith

        return Arith(op, as_node(a), as_node(b))

    def _logic(self, op: str, a: object, b: object | None = None) -> Node:
        from barfinex_cli.detector.indicators_ops import Logic

        return Logic(op, as_node(a), None if b is None else as_node(b))

    def __gt__(self, other: object) -> Node:
        return self._cmp(">", other)

    def __ge__(self, other: object) -> Node:
        return self._cmp(">=", other)

    def __lt__(self, other: object) -> Node:
        return self._cmp("<", other)

    def __le__(self, other: object) -> Node:
        return self._cmp("<=", other)

    def __eq__(self, other: object) -> Node:  # type: ignore[override]
        return self._cmp("==", other)

    def __ne__(self, other: object) -> Node:  # type: ignore[override]
        return self._cmp("!=", other)

    __hash__ = object.__hash__

    def __add__(self, other: object) -> Node:
        return self._arith("+", self, other)

    def __radd__(self, other: object) -> Node:
        return self._arith("+", other, self)

    def __sub__(self, other: object) -> Node:
        return self._arith("-", self, other)

    def __rsub__(self, other: object) -> Node:
        return self._arith("-", other, self)

    def __mul__(self, other: object) -> Node:
        return self._arith("*", self, other)

    def __rmul__(self, other: object) -> Node:
        return self._arith("*", other, self)

    def __truediv__(self, other: object) -> Node:
        return self._arith("/", self, other)

    def __rtruediv__(self, other: object) -> Node:
        return self._arith("/", other, self)

    def __neg__(self) -> Node:
        from barfinex_cli.detector.indicators_ops import Unary

        return Unary("neg", self)

    def __abs__(self) -> Node:
        from barfinex_cli.detector.indicators_ops import Unary

        return Unary("abs", self)

    def __and__(self, other: object) -> Node:
        return self._logic("&", self, other)

    def __rand__(self, other: object) -> Node:
        return self._logic("&", other, self)

    def __or__(self, other: object) -> Node:
        return self._logic("|", self, other)

    def __ror__(self, other: object) -> Node:
        return self._logic("|", other, self)

    def __invert__(self) -> Node:
        return self._logic("~", self)

    def shift(self, n: int = 1) -> Node:
        """Return this node's value `n` candles ago (only the past: `n` >= 1)."""
        from barfinex_cli.detector.indicators_ops import Shift

        return Shift(self, n, label=f"shift({self}, {n})")


def as_node(value: object) -> Node:
    """Return `value` as a node: nodes as they are, numbers as constants, names as columns."""
    if isinstance(value, Node):
        return value
    if isinstance(value, bool):
        raise TypeError(f"{value} is not a condition; write a comparison such as ta.rsi(14) > 70")
    if isinstance(value, int | float):
        return Const(float(value))
    if isinstance(value, str):
        return Column(value)
    raise TypeError(f"expected an indicator, a column name or a number, got {type(value).__name__}")


def num_input(node: Node, role: str) -> Node:
    if node.kind != "num":
        raise TypeError(f"{node} is a condition, not a number: it cannot be used {role}")
    return node


class Column(Node):
    """A candle column, as it arrives."""

    def __init__(self, name: str) -> None:
        if name not in (*CANDLE_COLUMNS, "open_ms"):
            from barfinex_cli.detector.indicators import close_names

            raise TypeError(f"unknown candle column {name!r}{close_names(name, CANDLE_COLUMNS)}")
        super().__init__((), (name,), 0, arity=0, label=name)
        self.name = name

    def describe(self) -> str:
        return self.name

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        return pl.col(self.name)

    def state(self) -> Update:
        name = self.name

        def update(candle: Mapping[str, Value]) -> Value:
            try:
                return candle[name]
            except KeyError:
                raise MissingColumn(name) from None

        return update


class Const(Node):
    """A number written in the strategy."""

    def __init__(self, value: float) -> None:
        super().__init__((), (value,), 0, arity=0, finite=math.isfinite(value))
        self.value = value

    def describe(self) -> str:
        return f"{self.value:g}"

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        import polars as pl

        return pl.lit(self.value, dtype=pl.Float64)

    def state(self) -> Update:
        value = self.value
        return lambda _candle: value


class Raw(Node):
    """A bare polars expression: vectorised only, so a strategy using it cannot run live."""

    def __init__(self, expr: pl.Expr, name: str, lookback: int, kind: Kind) -> None:
        super().__init__(
            (), (name, lookback, kind), lookback, kind=kind, arity=0, finite=False, label=name
        )
        self._expr = expr

    def expr(self, ins: list[pl.Expr], at: Frame) -> pl.Expr:
        return self._expr

    def state(self) -> Update:
        raise VectorOnly(f"ta.raw({self.label}) has no incremental form")
