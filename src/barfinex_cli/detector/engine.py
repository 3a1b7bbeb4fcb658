"""Evaluate a strategy over a whole candle frame (scan, backtest), and what both engines share.

`Plan` lays a strategy's rules out as one deduplicated graph of nodes (an indicator used by three
rules is computed once) and owns the per-candle decision code both engines run: group scores
from the rule outcomes, the decision, the cooldown, the record. `VectorEngine` computes every
node as a polars column, level by level, then packs each candle's rule outcomes into one bitmask.
The scores and decisions are computed in Python once per distinct mask, by the same `Plan` code
`IncrementalEngine` (engine_incremental.py) runs per candle, and only the candidate candles
leave polars for the cooldown and the attribution. So the signals are equal, not merely alike.

A rule whose nodes fail on the data (a missing column, a polars error) is reported in `broken`
with its reason and counted as not holding; the other rules go on.

This module runs past ~250 lines because the plan, the record and the vectorised engine are one
contract: splitting them would scatter the code that must stay identical for both engines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from barfinex_cli.contracts.detector import (
    Direction,
    RuleAttribution,
    SignalAction,
    SignalGenerated,
)
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.detector.indicators_core import Column, Const, Frame, MissingColumn, Node, Value
from barfinex_cli.detector.strategy import Cooldown, Strategy
from barfinex_cli.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

NUMERIC_COLUMNS = ("open", "high", "low", "close", "volume", "buy_volume", "sell_volume", "trades")
Decision = tuple[Direction, SignalAction, float]


class Layout(NamedTuple):
    """What every signal of a strategy shares: per rule its name, weight, side and value labels."""

    rules: tuple[tuple[str, float, Direction | None, tuple[str, ...]], ...]


class SignalRecord(NamedTuple):
    """A signal as an engine decides it; `to_payload` makes it the bus event.

    Equal records mean equal signals: the rule outcomes and the values the rules read are held
    as plain tuples, and `attribution` builds the contract models from them when asked.
    """

    strategy: str
    symbol: str
    timeframe: str
    open_ms: int
    candle_index: int
    """The candle's position in the series fed to the engine (0-based)."""
    direction: Direction
    action: SignalAction
    score: float
    threshold: float
    rules: tuple[str, ...]
    """The rules that held and count toward this signal's score."""
    held: tuple[bool, ...]
    """Per rule of the strategy, in order: whether it held."""
    values: tuple[float | None, ...]
    """The values the rules read, rule after rule, in `layout` order."""
    layout: Layout

    @property
    def held_rules(self) -> list[str]:
        """Return the names of all rules that held on this candle."""
        return [rule[0] for rule, held in zip(self.layout.rules, self.held, strict=True) if held]

    @property
    def attribution(self) -> list[RuleAttribution]:
        """Return, per rule: whether it held, its weight, its side and the values it read."""
        out, values = [], iter(self.values)
        for (name, weight, side, labels), held in zip(self.layout.rules, self.held, strict=True):
            seen = {label: next(values) for label in labels}
            out.append(
                RuleAttribution(rule=name, held=held, weight=weight, direction=side, values=seen)
            )
        return out


def to_payload(record: SignalRecord, instance: str, exchange: str) -> SignalGenerated:
    """Return the `detector.signal` payload of a record."""
    return SignalGenerated(
        strategy=record.strategy,
        instance=instance,
        exchange=exchange,
        symbol=record.symbol,
        timeframe=record.timeframe,
        candle_time=open_time(record.open_ms),
        direction=record.direction,
        action=record.action,
        score=record.score,
        threshold=record.threshold,
        attribution=record.attribution,
    )


def open_time(open_ms: int) -> datetime:
    """Return a candle open time in ms as an aware UTC datetime (exact, no float)."""
    return from_ms(open_ms)


def clean(value: Value) -> float | None:
    """Return an attribution value: a finite float, or None for null, NaN and infinity."""
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


class Plan:
    """A strategy's rules as one graph of unique nodes, and the per-candle decision code."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.nodes: list[Node] = []
        self.slot: dict[tuple[Any, ...], int] = {}
        for rule in strategy.rules:
            for node in rule.condition.walk():
                if node.key not in self.slot:
                    self.slot[node.key] = len(self.nodes)
                    self.nodes.append(node)
        self.children = [[self.slot[c.key] for c in n.children] for n in self.nodes]
        self.conditions = [self.slot[r.condition.key] for r in strategy.rules]
        reported = [[(n.label or str(n), self.slot[n.key]) for n in r.reported()]
                    for r in strategy.rules]  # fmt: skip
        self.depends = [{self.slot[n.key] for n in r.condition.walk()} for r in strategy.rules]
        self.layout = Layout(tuple(
            (r.name, r.weight, r.side, tuple(label for label, _ in reported[i]))
            for i, r in enumerate(strategy.rules)
        ))  # fmt: skip
        self.value_slots = [slot for rule in reported for _, slot in rule]
        self.members = {(g.direction, g.action): g.rules for g in strategy.groups}
        self._names: dict[tuple[tuple[bool, ...], str, str], tuple[str, ...]] = {}

    def scores(self, held: Sequence[bool]) -> list[float]:
        """Return each group's score: its held rules' weights added in rule order from 0.0."""
        weights = [r.weight for r in self.strategy.rules]
        out = []
        for group in self.strategy.groups:
            score = 0.0
            for i in group.rules:
                score = score + (weights[i] if held[i] else 0.0)
            out.append(score)
        return out

    def reached(self, scores: Sequence[float]) -> bool:
        """Return whether any group score reaches the threshold (the candle is a candidate)."""
        return any(s >= self.strategy.threshold for s in scores)

    def fire(self, cooldown: Cooldown, symbol: str, index: int, decisions: list[Decision]) -> bool:
        """Return whether a candle's decisions fire (cooldown allowing); start the cooldown."""
        if not decisions or not cooldown.allows(symbol, index):
            return False
        cooldown.fired(symbol, index)
        return True

    def records(
        self,
        decisions: list[Decision],
        symbol: str,
        index: int,
        open_ms: int,
        held: tuple[bool, ...],
        values: tuple[float | None, ...],
    ) -> list[SignalRecord]:
        """Return the records of one candle's decisions (`values`: `clean`, `value_slots` order)."""
        strategy, out = self.strategy, []
        for direction, action, score in decisions:
            key = (held, direction, action)
            names = self._names.get(key)
            if names is None:
                members = self.members[direction, action]
                names = self._names[key] = tuple(strategy.rules[i].name for i in members if held[i])
            out.append(SignalRecord(
                strategy.name, symbol, strategy.timeframe, open_ms, index, direction, action,
                score, strategy.threshold, names, held, values, self.layout,
            ))  # fmt: skip
        return out


def prepare_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Return candles sorted by `open_ms` with float columns; raise `UsageError` on bad rows."""
    import polars as pl

    if "open_ms" not in frame.columns:
        for name in ("time", "timestamp"):
            if name in frame.columns and isinstance(frame.schema[name], pl.Datetime):
                frame = frame.with_columns(pl.col(name).dt.epoch("ms").alias("open_ms"))
                break
        else:
            raise UsageError("candles need an open_ms column (UTC ms) or a datetime `time`")
    present = [c for c in NUMERIC_COLUMNS if c in frame.columns]
    casts = [pl.col(c).cast(pl.Float64) for c in present if frame.schema[c] != pl.Float64]
    if frame.schema["open_ms"] != pl.Int64:
        casts.append(pl.col("open_ms").cast(pl.Int64))
    if casts:
        frame = frame.with_columns(casts)
    keys = ["symbol", "open_ms"] if "symbol" in frame.columns else ["open_ms"]
    step = pl.col("open_ms").diff()
    if "symbol" in frame.columns:
        step = pl.when(pl.col("symbol") == pl.col("symbol").shift(1)).then(step)
    checked = [c for c in present if c != "trades"]
    ordered, finite = frame.select(
        (step.fill_null(1) > 0).all(),
        pl.all_horizontal([pl.col(c).is_finite() for c in checked] or [pl.lit(True)]).all(),
    ).row(0)
    if not ordered:
        frame = frame.sort(keys)
        if frame.select(pl.struct(keys).is_duplicated().any()).item():
            raise UsageError("candles repeat an open time; give one candle per open time")
    if not finite:
        for name in checked:
            bad = frame.select(pl.arg_where(~pl.col(name).is_finite().fill_null(False)))
            if bad.height:
                row = frame.row(int(bad.item(0, 0)), named=True)
                raise UsageError(
                    f"candle at open_ms {row['open_ms']}: {name} is {row[name]}; "
                    "every candle needs finite prices and volumes"
                )
    return frame.rechunk()


class VectorEngine:
    """Evaluate a strategy over whole frames of candles, one vectorised pass per symbol."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.plan = Plan(strategy)
        self.broken: dict[str, str] = {}
        """Rule name -> why it could not be evaluated (it counts as not holding)."""

    def node_frame(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[int, str]]:
        """Return `frame` with one `__n{slot}` column per computed node, and the failed slots.

        Nodes are computed level by level (a level's inputs are all in earlier levels), each
        level in one `select`, so polars runs a level's nodes in parallel.
        """
        import polars as pl

        plan, nodes = self.plan, self.plan.nodes
        out = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("__i"))
        at = Frame(pl.col("__i"), out.height)
        failed: dict[int, str] = {}
        level = [0] * len(nodes)
        for slot, node in enumerate(nodes):
            if isinstance(node, Column) and node.name not in out.columns:
                failed[slot] = str(MissingColumn(node.name))
            kids = plan.children[slot]
            leaf = isinstance(node, Column | Const)
            level[slot] = 0 if leaf else 1 + max((level[k] for k in kids), default=0)
        for depth in range(1, max(level, default=0) + 1):
            exprs: dict[int, pl.Expr] = {}
            for slot, node in enumerate(nodes):
                if level[slot] != depth:
                    continue
                kids = plan.children[slot]
                if bad := next((k for k in kids if k in failed), None):
                    failed[slot] = failed[bad]
                    continue
                try:
                    exprs[slot] = node.expr([self.ref(k) for k in kids], at).alias(f"__n{slot}")
                except Exception as exc:
                    failed[slot] = _reason(exc)
            try:  # select + hstack: eager with_columns costs far more on a wide frame
                out = out.hstack(out.select(list(exprs.values())).get_columns())
            except Exception:
                for slot, expr in exprs.items():
                    try:
                        out = out.hstack(out.select(expr).get_columns())
                    except Exception as exc:
                        failed[slot] = _reason(exc)
        return out, failed

    def ref(self, slot: int) -> pl.Expr:
        """Return the expression reading node `slot` in a `node_frame` result."""
        import polars as pl

        node = self.plan.nodes[slot]
        if isinstance(node, Column | Const):
            return node.expr([], Frame(pl.col("__i"), 0))
        return pl.col(f"__n{slot}")

    def evaluate(self, frame: pl.DataFrame, symbol: str | None = None) -> list[SignalRecord]:
        """Return every signal the live engine would fire on these candles, oldest first.

        A `symbol` column splits the frame per symbol; otherwise the candles are `symbol`'s
        (default: the strategy's first symbol).
        """
        frame = prepare_frame(frame)
        self.broken = {}
        if "symbol" in frame.columns:
            split = frame.partition_by("symbol", maintain_order=True, as_dict=True)
            parts = [(str(key[0]), part) for key, part in split.items()]
        else:
            parts = [(symbol or self.strategy.symbols[0], frame)]
        records: list[SignalRecord] = []
        for name, part in parts:
            records += self._evaluate_one(part, name)
        return sorted(records, key=lambda r: (r.open_ms, r.symbol))

    def _evaluate_one(self, frame: pl.DataFrame, symbol: str) -> list[SignalRecord]:
        import polars as pl

        strategy, plan = self.strategy, self.plan
        nodes, failed = self.node_frame(frame)
        n_rules, warm = len(strategy.rules), strategy.effective_warmup - 1
        widths = ((8, pl.UInt8), (16, pl.UInt16), (32, pl.UInt32), (64, pl.UInt64))
        width = next(t for b, t in widths if n_rules <= b)  # MAX_RULES is 64
        zero, bits = pl.lit(0, width), []
        for i, rule in enumerate(strategy.rules):
            if bad := sorted(plan.depends[i] & failed.keys()):
                self.broken[rule.name] = f"{plan.nodes[bad[0]]}: {failed[bad[0]]}"
                continue
            # a null outcome (undefined inputs) takes `otherwise`: the rule does not hold
            held = pl.col(f"__n{plan.conditions[i]}")
            bits.append(pl.when(held).then(pl.lit(1 << i, width)).otherwise(zero))
        if not bits:
            return []
        # each candle's rule outcomes as one integer; decide once per distinct outcome
        masks = nodes.select(pl.sum_horizontal(bits).alias("__m"))["__m"]
        decided: dict[int, list[Decision]] = {}
        held_of: dict[int, tuple[bool, ...]] = {}
        for m in masks.slice(warm).unique().to_list():
            held_of[m] = tuple(bool(m >> i & 1) for i in range(n_rules))
            scores = plan.scores(held_of[m])
            if plan.reached(scores) and (decisions := strategy.decide(scores)):
                decided[m] = decisions
        cands = masks.slice(warm).is_in(list(decided)).arg_true() + warm
        # the cooldown's rule, in bulk: the candidates that fire (all have decisions)
        fired = Cooldown(strategy.cooldown).admit(symbol, cands.to_list())
        if not fired:
            return []
        accepted = list(zip(fired, masks.gather(fired).to_list(), strict=True))
        refs = [
            (self.ref(s) if s not in failed else pl.lit(None, pl.Float64)).alias(f"__v{k}")
            for k, s in enumerate(plan.value_slots)
        ]
        picked = nodes.select("open_ms", *refs)[[i for i, _ in accepted]]
        finite = [  # what clean() does live
            pl.when(pl.col(c).is_finite()).then(pl.col(c).cast(pl.Float64)).alias(c)
            for c in picked.columns[1:]
        ]
        rows = picked.with_columns(finite).rows()
        out = []
        for (index, m), row in zip(accepted, rows, strict=True):
            out += plan.records(decided[m], symbol, index, row[0], held_of[m], row[1:])
        return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
