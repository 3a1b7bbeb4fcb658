"""The inspector's KPIs: where the account stands and how each strategy uses its capital.

Published as `inspector.kpi` every `kpi_interval_s` and served at `/kpi`. Besides the day's
trading results (trades, win rate, P&L, drawdown) it reports capital efficiency per strategy:

- **utilisation**: capital in the strategy's positions and open entry orders over equity;
- **suppression**: its decisions and signals stopped, by advisor stage (`stage:quality`, counted
  from `advisor.*.blocked` and `advisor.decision.rejected`) and by inspector policy
  (`policy:max_trades_per_day`, counted from verdicts other than ALLOW);
- **reservation**: capital held by its open entry orders.

`Suppression` counts as events arrive; `report` is pure over the store's records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from barfinex_cli.contracts.inspector import KpiReported, StrategyCapital
from barfinex_cli.store.inspector import Counters, OrderRecord, PositionRecord


class Suppression:
    """Decisions and blocks per strategy, counted as the events come."""

    def __init__(self) -> None:
        self.decisions: dict[str, int] = defaultdict(int)
        self.blocked: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def decided(self, strategy: str) -> None:
        """Count a decision that reached the inspector."""
        self.decisions[strategy] += 1

    def stage(self, strategy: str, stage: str) -> None:
        """Count a signal the advisor stopped at `stage`."""
        self.blocked[strategy][f"stage:{stage}"] += 1

    def policy(self, strategy: str, policy: str) -> None:
        """Count a decision a policy stopped."""
        self.blocked[strategy][f"policy:{policy}"] += 1


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
) -> KpiReported:
    """Return the KPI event for the account as it stands at `now`.

    `strategy_of` maps a decision id to its strategy (for open entry orders).
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
        drawdown_limit=drawdown_limit,
        exposure=exposure,
        policies=dict(policies),
        strategies=strategies,
    )
