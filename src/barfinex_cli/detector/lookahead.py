"""Prove a strategy does not peek at the future: cut the history after t, nothing at t may change.

For sampled candles t, every node of the strategy (each indicator, each condition) is computed
once over the whole history and once over the history up to and including t. A value at t that
differs between the two was computed from candles after t: look-ahead bias, which makes a scan
or backtest look better than live trading can be. The report names each biased rule, the node
where the difference starts (the one whose inputs did not differ) and the first candle it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from barfinex_cli.detector.engine import VectorEngine, prepare_frame
from barfinex_cli.detector.indicators_core import Column, Const, Value
from barfinex_cli.detector.strategy import Strategy

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True, slots=True)
class Bias:
    """One rule whose value at a candle depends on later candles."""

    rule: str
    node: str
    symbol: str
    index: int
    open_ms: int
    full: Value
    """The value with the whole history."""
    cut: Value
    """The value with the history cut after this candle."""


@dataclass(frozen=True, slots=True)
class LookaheadReport:
    """What was checked and what was found."""

    candles: int
    checked: tuple[int, ...]
    biased: tuple[Bias, ...]

    @property
    def clean(self) -> bool:
        """Return whether no rule looked ahead at any checked candle."""
        return not self.biased


def same(a: Value, b: Value) -> bool:
    """Return whether two node values are equal (NaN equals NaN, None equals None)."""
    if a is None or b is None:
        return a is b
    return a == b or (a != a and b != b)


def sample_points(height: int, samples: int) -> list[int]:
    """Return up to `samples` candle positions spread evenly over all but the last candle."""
    last = height - 2
    if last < 0:
        return []
    if samples <= 1 or last == 0:
        return [last]
    return sorted({round(i * last / (samples - 1)) for i in range(samples)})


def check_lookahead(strategy: Strategy, frame: pl.DataFrame, samples: int = 20) -> LookaheadReport:
    """Compare full-history and cut-history values at `samples` candles of each symbol."""
    frame = prepare_frame(frame)
    if "symbol" in frame.columns:
        parts = [(str(k[0]), p) for k, p in frame.partition_by("symbol", as_dict=True).items()]
    else:
        parts = [(strategy.symbols[0], frame)]
    engine, checked = VectorEngine(strategy), set[int]()
    found: dict[str, Bias] = {}
    for symbol, part in parts:
        points = sample_points(part.height, samples)
        checked.update(points)
        for bias in _check(engine, symbol, part, points):
            found.setdefault(bias.rule, bias)
    biased = tuple(sorted(found.values(), key=lambda b: (b.index, b.rule)))
    return LookaheadReport(frame.height, tuple(sorted(checked)), biased)


def _check(engine: VectorEngine, symbol: str, frame: pl.DataFrame, points: list[int]) -> list[Bias]:
    plan = engine.plan
    full, failed = engine.node_frame(frame)
    slots = [
        s
        for s, node in enumerate(plan.nodes)
        if s not in failed and not isinstance(node, Column | Const)
    ]
    columns = {s: full[f"__n{s}"].to_list() for s in slots}
    times = full["open_ms"].to_list()
    out: list[Bias] = []
    flagged: set[str] = set()
    for t in points:
        cut, _ = engine.node_frame(frame.head(t + 1))
        last = {s: cut[f"__n{s}"][-1] for s in slots if f"__n{s}" in cut.columns}
        differs = {s for s in slots if s in last and not same(columns[s][t], last[s])}
        if not differs:
            continue
        roots = [s for s in differs if not set(plan.children[s]) & differs]
        for i, rule in enumerate(engine.strategy.rules):
            mine = [s for s in roots if s in plan.depends[i]]
            if mine and rule.name not in flagged:
                flagged.add(rule.name)
                s = mine[0]
                out.append(
                    Bias(rule.name, str(plan.nodes[s]), symbol, t, times[t], columns[s][t], last[s])
                )
    return out
