"""The strategy file format: weighted rules, a threshold, a cooldown, and how a signal is decided.

A rule is a named condition with a weight, a direction (long, short, or either: a filter that
argues for both sides) and an action (open, close, reduce, flip). Each (direction, action) pair is
scored on its own: the sum of the weights of the rules that hold and argue for it (an "either"
rule counts for both sides of its action). A pair whose score reaches the threshold fires; when
long and short of one action both reach it, the higher score wins and a tie fires neither. After
a signal, the symbol is quiet for `cooldown` candles. Both engines call `decide` and `Cooldown`,
so scoring and suppression cannot drift apart.

`guard` is the one gate for calls into user strategy code: any failure becomes a `StrategyError`
naming the strategy and what was running, so the service can disable that strategy and go on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, get_args

from barfinex_cli.contracts.detector import Direction, SignalAction
from barfinex_cli.contracts.market import Timeframe
from barfinex_cli.detector.indicators_core import Column, Node, Raw, as_node
from barfinex_cli.errors import StrategyError

RuleDirection = Literal["long", "short", "either"]
ACTIONS: tuple[SignalAction, ...] = get_args(SignalAction)
TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)
MAX_RULES = 64
"""The vectorised engine packs a candle's rule outcomes into one 64-bit mask."""


@contextmanager
def guard(strategy: str, doing: str) -> Iterator[None]:
    """Run user strategy code; turn any failure into a `StrategyError` saying what failed."""
    try:
        yield
    except StrategyError:
        raise
    except (Exception, SystemExit) as exc:  # sys.exit in a strategy must not end the service
        raise strategy_error(strategy, doing, exc) from exc


def strategy_error(strategy: str, doing: str, exc: BaseException) -> StrategyError:
    """Return the `StrategyError` for `exc` raised while `doing` (the guard's message format)."""
    reason = str(exc) or type(exc).__name__
    return StrategyError(f"strategy {strategy}: {doing}: {reason}")


@dataclass(frozen=True)
class Rule:
    """A named condition with a weight, the side it argues for, and the action it asks for."""

    name: str
    condition: Node
    weight: float = 1.0
    direction: RuleDirection = "either"
    action: SignalAction = "open"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a rule needs a name, e.g. Rule('ema_cross_up', ...)")
        node = as_node(self.condition)
        if node.kind != "bool":
            raise TypeError(
                f"rule {self.name}: the condition {node} is a number; compare it, "
                "e.g. ta.rsi(14) > 70"
            )
        object.__setattr__(self, "condition", node)
        if not isinstance(self.weight, int | float) or not math.isfinite(self.weight):
            raise ValueError(f"rule {self.name}: weight must be a finite number")
        if self.weight < 0:
            raise ValueError(
                f"rule {self.name}: weight {self.weight:g} is negative; a score only adds the "
                "weights of rules that hold — to argue against a side, give the rule the other "
                "direction, or negate its condition with ~"
            )
        object.__setattr__(self, "weight", float(self.weight))
        if self.direction not in ("long", "short", "either"):
            raise ValueError(f"rule {self.name}: direction must be long, short or either")
        if self.action not in ACTIONS:
            raise ValueError(f"rule {self.name}: action must be one of {', '.join(ACTIONS)}")

    @property
    def side(self) -> Direction | None:
        """Return the side this rule argues for; None for an "either" filter."""
        return None if self.direction == "either" else self.direction

    @property
    def lookback(self) -> int:
        """Return the candle index at which this rule's condition is first defined."""
        return self.condition.lookback

    def reported(self) -> list[Node]:
        """Return the named numeric nodes this rule reads (its attribution values)."""
        found: dict[str, Node] = {}

        def visit(node: Node) -> None:
            if node.kind == "num" and node.label is not None:
                found.setdefault(node.label, node)
                return
            for child in node.children:
                visit(child)

        visit(self.condition)
        return list(found.values())


@dataclass(frozen=True)
class Group:
    """A (direction, action) pair and the rules (by index) whose weights it sums."""

    direction: Direction
    action: SignalAction
    rules: tuple[int, ...]


@dataclass(frozen=True)
class Strategy:
    """What a strategy file exports as `strategy`."""

    name: str
    symbols: Sequence[str]
    timeframe: str
    rules: Sequence[Rule]
    threshold: float
    cooldown: int = 0
    warmup: int | None = None
    groups: tuple[Group, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a strategy needs a name")
        symbols = [self.symbols] if isinstance(self.symbols, str) else list(self.symbols)
        if not symbols or not all(isinstance(s, str) and s for s in symbols):
            raise ValueError("symbols must be a list of market symbols, e.g. ['BTC/USDT']")
        object.__setattr__(self, "symbols", tuple(symbols))
        if self.timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe {self.timeframe!r} is not one of {', '.join(TIMEFRAMES)}")
        rules = tuple(self.rules)
        if not rules or not all(isinstance(r, Rule) for r in rules):
            raise ValueError("rules must be a non-empty list of Rule(...)")
        if len(rules) > MAX_RULES:
            raise ValueError(
                f"{len(rules)} rules is more than the {MAX_RULES} a strategy holds; "
                "split it into several strategies"
            )
        names = [r.name for r in rules]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dup)}")
        object.__setattr__(self, "rules", rules)
        if not isinstance(self.threshold, int | float) or not self.threshold > 0:
            raise ValueError("threshold must be a number > 0")
        object.__setattr__(self, "threshold", float(self.threshold))
        if not isinstance(self.cooldown, int) or self.cooldown < 0:
            raise ValueError("cooldown must be a whole number of candles >= 0")
        needed = self.needed_warmup
        if self.warmup is not None and (not isinstance(self.warmup, int) or self.warmup < needed):
            raise ValueError(
                f"warmup={self.warmup!r} is shorter than the {needed} candles the rules need; "
                f"remove warmup= or set it to at least {needed}"
            )
        object.__setattr__(self, "groups", _groups(rules))
        if self.groups and len(self.unreachable()) == len(self.groups):
            raise ValueError(
                f"threshold {self.threshold:g} is more than any side can score "
                f"({'; '.join(self.unreachable())}): the strategy can never fire — lower the "
                "threshold or raise the weights"
            )

    @property
    def needed_warmup(self) -> int:
        """Return how many candles the rules need before all of them are defined."""
        return max(r.lookback for r in self.rules) + 1

    @property
    def effective_warmup(self) -> int:
        """Return the candles fed before the first signal may fire (`warmup` or the need)."""
        return self.needed_warmup if self.warmup is None else self.warmup

    def unreachable(self) -> list[str]:
        """Return the (direction, action) pairs that can never fire, with the most they score.

        A pair fires when the weights of its rules that hold reach the threshold; if all of
        them together weigh less, it never does. When every pair is so, the strategy is
        refused; when only some are, `bfx detector check` warns (such a pair is often an
        exit being tuned, so it does not stop the rest of the strategy from running).
        """
        found = []
        for group in self.groups:
            most = sum(self.rules[i].weight for i in group.rules)
            if most + 1e-9 < self.threshold:
                found.append(f"{group.direction} {group.action} scores at most {most:g}")
        return found

    def vector_only(self) -> list[str]:
        """Return the rules that use `ta.raw` and so cannot run incrementally."""
        return [r.name for r in self.rules if any(isinstance(n, Raw) for n in r.condition.walk())]

    def columns(self) -> set[str]:
        """Return the candle columns the rules read."""
        return {n.name for r in self.rules for n in r.condition.walk() if isinstance(n, Column)}

    def decide(self, scores: Sequence[float]) -> list[tuple[Direction, SignalAction, float]]:
        """Return the signals the group `scores` call for, in action order (see module doc)."""
        fired: dict[SignalAction, list[tuple[float, Direction]]] = {}
        for group, score in zip(self.groups, scores, strict=True):
            if score >= self.threshold:
                fired.setdefault(group.action, []).append((score, group.direction))
        out: list[tuple[Direction, SignalAction, float]] = []
        for action in ACTIONS:
            cands = fired.get(action, [])
            if len(cands) == 2 and cands[0][0] == cands[1][0]:
                continue
            if cands:
                score, direction = max(cands)
                out.append((direction, action, score))
        return out


def _groups(rules: tuple[Rule, ...]) -> tuple[Group, ...]:
    groups = []
    for action in ACTIONS:
        for side in ("long", "short"):
            members = tuple(
                i
                for i, r in enumerate(rules)
                if r.action == action and r.direction in (side, "either")
            )
            if any(rules[i].direction == side for i in members):
                groups.append(Group(side, action, members))
    return tuple(groups)


class Cooldown:
    """Per-symbol quiet period: after a signal at candle i, candles i+1..i+n stay quiet."""

    def __init__(self, candles: int) -> None:
        self.candles = candles
        self.last: dict[str, int] = {}

    def allows(self, symbol: str, index: int) -> bool:
        """Return whether a signal at candle `index` may fire."""
        last = self.last.get(symbol)
        return last is None or index - last > self.candles

    def fired(self, symbol: str, index: int) -> None:
        """Record a signal at candle `index`."""
        self.last[symbol] = index

    def admit(self, symbol: str, indices: Iterable[int]) -> list[int]:
        """Return which of these ascending candles fire, recording them: `allows` + `fired`."""
        out, last, quiet = [], self.last.get(symbol), self.candles
        for index in indices:
            if last is None or index - last > quiet:
                out.append(index)
                last = index
        if last is not None:
            self.last[symbol] = last
        return out
