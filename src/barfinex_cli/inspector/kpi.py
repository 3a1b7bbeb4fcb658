"""The inspector's KPIs: where the account stands and how each strategy uses its capital.

Published as `inspector.kpi` every `kpi_interval_s` and served at `/kpi`. Besides the day's
trading results (trades, win rate, P&L, drawdown) it reports capital efficiency per strategy:

- **utilisation**: capital in the strategy's positions and open entry orders over equity;
- **suppression**: its decisions and signals stopped, by advisor stage (`stage:quality`, counted
  once per signal from `advisor.<stage>.blocked`, `advisor.decision.rejected` and, as
  `stage:intake`, `advisor.signal.dropped`) and by inspector policy (`policy:max_trades_per_day`,
  counted from verdicts other than ALLOW); read from the inspector's store, so a restart keeps it;
- **reservation**: capital held by its open entry orders.

Beside the day's drawdown figures it reports their limits (`drawdown.from_peak_pct`,
`drawdown.daily_loss_pct`) as fractions. `report` is pure over the store's records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from barfinex_cli.contracts.inspector import KpiReported, StrategyCapital
from barfinex_cli.store.inspector import Counters, InspectorStore, OrderRecord, PositionRecord


@dataclass(frozen=True, slots=True)
class Suppression:
    """Decisions judged and signals or decisions stopped, per strategy (see the module)."""

    decisions: Mapping[str, int] = field(default_factory=dict)
    blocked: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, store: InspectorStore) -> Suppression:
        """Read the counts from the inspector's store."""
        decisions, blocked = store.suppression()
        return cls(decisions, blocked)


def report(
    *,
    account: str,
    currency: str,
    now: datetime,
    day_start: datetime,
    equity: Decimal,
    unrealised: Decimal,
    counters: Counters,
    positions: Sequence[PositionRecord],
    open_orders: Sequence[OrderRecord],
    strategy_of: Mapping[str, str],
    suppression: Suppression,
    policies: Mapping[str, str],
    drawdown_limit: float | None = None,
    day_start_equity: Decimal | None = None,
    daily_loss_limit: float | None = None,
) -> KpiReported:
    """Return the KPI event for the account as it stands at `now`.

    `strategy_of` maps a decision id to its strategy (for open entry orders); the limits are
    fractions (None: not set), `day_start_equity` the equity the day's loss is measured from.
    """
    trades = counters.wins + counters.losses
    win_rate = counters.wins / trades if trades else 0.0
    peak = max(counters.peak_equity, equity)
    drawdown = float((peak - equity) / peak) if peak > 0 else 0.0
    exposure = sum((p.size * p.entry for p in positions), Decimal(0))
    in_pos: dict[str, Decimal] = defaultdict(Decimal)
    reserved: dict[str, Decimal] = defaultdict(Decimal)
    for position in positions:
        if position.runtime:
            in_pos[position.strategy] += position.size * position.entry
    for order in open_orders:
        if order.role != "entry":
            continue
        price = order.price or order.stop_price or order.intended_price or Decimal(0)
        strategy = strategy_of.get(order.decision_id or "", "unknown")
        reserved[strategy] += (order.amount - order.filled) * price
    names = set(in_pos) | set(reserved) | set(suppression.decisions) | set(suppression.blocked)
    strategies = {}
    for name in sorted(names):
        used = in_pos[name] + reserved[name]
        strategies[name] = StrategyCapital(
            in_positions=in_pos[name],
            reserved=reserved[name],
            utilisation=float(used / equity) if equity > 0 else 0.0,
            decisions=suppression.decisions.get(name, 0),
            blocked=dict(suppression.blocked.get(name, {})),
        )
    realised = counters.realised_today
    return KpiReported(
        account=account,
        period="day",
        period_start=day_start,
        period_end=now,
        trades=counters.trades_today,
        win_rate=min(max(win_rate, 0.0), 1.0),
        expectancy=(realised / trades) if trades else Decimal(0),
        pnl=realised + unrealised,
        pnl_currency=currency,
        max_drawdown=min(max(drawdown, 0.0), 1.0),
        equity=equity,
        realised_pnl=realised,
        unrealised_pnl=unrealised,
        drawdown=min(max(drawdown, 0.0), 1.0),
        drawdown_limit=_unit(drawdown_limit),
        daily_loss=None if day_start_equity is None else _loss(day_start_equity, equity),
        daily_loss_limit=_unit(daily_loss_limit),
        exposure=exposure,
        policies=dict(policies),
        strategies=strategies,
    )


def _unit(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 1.0)


def _loss(start: Decimal, equity: Decimal) -> float:
    """Return the fall from `start` to `equity` as a fraction (0 when not down)."""
    if start <= 0 or equity >= start:
        return 0.0
    return min(float((start - equity) / start), 1.0)
