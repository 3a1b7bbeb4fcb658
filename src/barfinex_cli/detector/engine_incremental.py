"""Evaluate a strategy live: one closed candle at a time, O(1) work per node.

Each symbol has its own node states, created from the same `Plan` the vectorised engine uses.
A candle runs every node once in plan order (children first); then the rule outcomes go through
the same code a scan uses: `Plan.scores`, `Strategy.decide`, the `Cooldown` rule, `Plan.records`.

A node that raises (a candle without the column it reads, say) is marked broken for that symbol:
its value is null from then on, the rules that use it count as not holding and are listed in
`broken` with the reason; the rest of the strategy keeps running.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from barfinex_cli.contracts.times import to_ms
from barfinex_cli.detector.engine import Plan, SignalRecord, clean
from barfinex_cli.detector.indicators_core import Update, Value, VectorOnly
from barfinex_cli.detector.strategy import Cooldown, Strategy, guard, strategy_error
from barfinex_cli.errors import StrategyError, UsageError

if TYPE_CHECKING:
    from barfinex_cli.contracts.market import CandleClosed

_NUMERIC = ("open", "high", "low", "close", "volume", "buy_volume", "sell_volume", "trades")


def candle_values(event: CandleClosed) -> dict[str, Any]:
    """Return a `market.candle` payload as the row `on_candle` takes (Decimal -> float)."""
    return {
        "open_ms": to_ms(event.open_time),
        "open": float(event.open),
        "high": float(event.high),
        "low": float(event.low),
        "close": float(event.close),
        "volume": float(event.volume),
        "trades": None if event.trades is None else float(event.trades),
        "buy_volume": None if event.buy_volume is None else float(event.buy_volume),
        "sell_volume": None if event.sell_volume is None else float(event.sell_volume),
    }


class _Series:
    """One symbol's node states and position."""

    __slots__ = ("index", "last_ms", "steps", "values")

    def __init__(self, plan: Plan) -> None:
        self.index = -1
        self.last_ms: int | None = None
        self.values: list[Value] = [None] * len(plan.nodes)
        self.steps: list[tuple[int, int, Update, int, int, int]] = []
        for slot, node in enumerate(plan.nodes):
            kids = [*plan.children[slot], 0, 0, 0]
            self.steps.append((slot, node.arity, node.state(), kids[0], kids[1], kids[2]))


class IncrementalEngine:
    """Feed closed candles per symbol; get the signals a scan of the same candles would give."""

    def __init__(self, strategy: Strategy) -> None:
        if vector_only := strategy.vector_only():
            raise StrategyError(
                f"strategy {strategy.name}: rule {vector_only[0]} uses ta.raw(...), which has "
                "no incremental form; it can be scanned (bfx detector scan) but not run live"
            )
        self.strategy = strategy
        self.plan = Plan(strategy)
        self.cooldown = Cooldown(strategy.cooldown)
        self.series: dict[str, _Series] = {}
        self.broken: dict[str, str] = {}
        """Rule name -> why it stopped being evaluated (it counts as not holding)."""
        self.evaluations = 0
        self.held_counts = [0] * len(strategy.rules)
        self._columns = [c for c in _NUMERIC if c in strategy.columns()]
        self._failed: dict[tuple[str, int], str] = {}

    def _series(self, symbol: str) -> _Series:
        series = self.series.get(symbol)
        if series is None:
            with guard(self.strategy.name, f"preparing {symbol}"):
                series = self.series[symbol] = _Series(self.plan)
        return series

    def on_candle(self, symbol: str, candle: Mapping[str, Any] | NamedTuple) -> list[SignalRecord]:
        """Evaluate one closed candle of `symbol`; return the signals it fires.

        `candle` holds `open_ms` and the columns the rules read (a `CandleRow` works). A candle
        not newer than the last one of its symbol (a redelivery) is ignored.
        """
        row = dict(candle._asdict() if hasattr(candle, "_asdict") else candle)
        series = self._series(symbol)
        open_ms = int(row["open_ms"])
        if series.last_ms is not None and open_ms <= series.last_ms:
            return []
        for name in self._columns:
            value = row.get(name)
            if value is None:
                continue
            value = float(value) if isinstance(value, int | Decimal) else value
            if not isinstance(value, float) or not math.isfinite(value):
                raise UsageError(
                    f"{symbol} candle at open_ms {open_ms}: {name} is {value!r}; "
                    "every candle needs finite prices and volumes"
                )
            row[name] = value
        series.last_ms = open_ms
        series.index += 1
        self.evaluations += 1
        self._run_nodes(symbol, series, row)
        return self._score(symbol, series, open_ms)

    def warm(self, symbol: str, candles: Iterable[Mapping[str, Any] | NamedTuple]) -> int:
        """Feed history before going live; its signals are dropped. Return candles fed."""
        count = 0
        for candle in candles:
            self.on_candle(symbol, candle)
            count += 1
        return count

    def last_open(self, symbol: str) -> int | None:
        """Return the open time (epoch ms) of the last candle of `symbol` evaluated, if any."""
        series = self.series.get(symbol)
        return None if series is None else series.last_ms

    def reset(self, symbol: str) -> None:
        """Forget `symbol`: its node states, position, cooldown and broken nodes.

        A restarted detector warmed past candles it has not evaluated yet resets the symbol and
        warms it again on the history before them, so they are evaluated live.
        """
        self.series.pop(symbol, None)
        self.cooldown.last.pop(symbol, None)
        for key in [k for k in self._failed if k[0] == symbol]:
            del self._failed[key]

    def _run_nodes(self, symbol: str, series: _Series, row: dict[str, Any]) -> None:
        v, steps, start = series.values, series.steps, 0
        while start < len(steps):
            k = start
            try:
                for k in range(start, len(steps)):
                    slot, arity, fn, a, b, c = steps[k]
                    if arity == 1:
                        v[slot] = fn(v[a])
                    elif arity == 2:
                        v[slot] = fn(v[a], v[b])
                    elif arity == 0:
                        v[slot] = fn(row)
                    else:
                        v[slot] = fn(v[a], v[b], v[c])
                return
            except VectorOnly:
                raise
            except Exception as exc:
                slot = steps[k][0]
                node = self.plan.nodes[slot]
                err = strategy_error(self.strategy.name, f"{symbol}: {node}", exc)
                self._failed[(symbol, slot)] = str(err)
                steps[k] = (slot, 0, lambda _row: None, 0, 0, 0)
                v[slot] = None
                start = k + 1

    def _score(self, symbol: str, series: _Series, open_ms: int) -> list[SignalRecord]:
        plan, strategy, v = self.plan, self.strategy, series.values
        held = [v[slot] is True for slot in plan.conditions]
        if self._failed:
            self._mark_broken(symbol, held)
        counts = self.held_counts
        for i, h in enumerate(held):
            if h:
                counts[i] += 1
        if series.index < strategy.effective_warmup - 1:
            return []
        scores = plan.scores(held)
        if not plan.reached(scores):
            return []
        decisions = strategy.decide(scores)
        if not plan.fire(self.cooldown, symbol, series.index, decisions):
            return []
        values = tuple(clean(v[slot]) for slot in plan.value_slots)
        return plan.records(decisions, symbol, series.index, open_ms, tuple(held), values)

    def _mark_broken(self, symbol: str, held: list[bool]) -> None:
        for i, rule in enumerate(self.strategy.rules):
            bad = sorted(
                s for (sym, s) in self._failed if sym == symbol and s in self.plan.depends[i]
            )
            if bad:
                held[i] = False
                self.broken.setdefault(rule.name, self._failed[(symbol, bad[0])])

    def firing_rates(self) -> dict[str, float]:
        """Return, per rule, the share of evaluated candles on which it held."""
        n = self.evaluations
        return {
            r.name: (c / n if n else 0.0)
            for r, c in zip(self.strategy.rules, self.held_counts, strict=True)
        }

    def reset_counters(self) -> None:
        """Start a new metrics window (evaluations and per-rule hold counts)."""
        self.evaluations = 0
        self.held_counts = [0] * len(self.strategy.rules)
