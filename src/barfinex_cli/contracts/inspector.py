"""Inspector events: risk verdicts, protective orders, fill audits, reconciliation, KPIs, alerts.

The inspector stands between the advisor and the exchange. Every decision gets a verdict, even an
ALLOW, so the audit trail shows which policy let each trade through. `decision_id` is the id of the
`advisor.decision` event a verdict or audit is about.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from barfinex_cli.contracts.orders import Amount
from barfinex_cli.contracts.types import Model, Payload, UtcDatetime

Verdict = Literal["ALLOW", "BLOCK", "THROTTLE", "STAND_DOWN", "CLOSE_ALL"]
ProtectiveKind = Literal["stop_loss", "take_profit", "trailing_stop"]
Severity = Literal["info", "warning", "error", "critical"]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class VerdictIssued(Payload):
    """The inspector's ruling on a decision, naming the policy that made it."""

    event_type = "inspector.verdict"

    decision_id: str
    verdict: Verdict
    policy: str
    reason: str
    until: UtcDatetime | None = None
    """When a THROTTLE or STAND_DOWN ends; None for verdicts that do not expire."""
    figures: dict[str, int | float | str] = Field(default_factory=dict)
    """What the deciding policy saw, by name (`trades_today`, `max_trades_per_day`, ...): the
    numbers behind `reason`. Empty on verdicts recorded before it was kept, and on a pending
    notice; `also` lists the other policies that refused too."""


class VerdictPending(Payload):
    """A decision held unjudged, no order placed, while the provider does not answer."""

    event_type = "inspector.verdict.pending"

    decision_id: str
    reason: str
    """Why it waits. Published once per decision; its one `inspector.verdict` follows when the
    provider answers. Not a verdict: nothing that counts verdicts or refusals counts it."""


class ProtectivePlaced(Payload):
    """A stop-loss, take-profit or trailing stop placed to guard an open position."""

    event_type = "inspector.protective.placed"

    order_id: str
    account: str
    symbol: str
    kind: ProtectiveKind
    price: Decimal
    amount: Amount
    decision_id: str | None = None
    emulated: bool = False
    """True when the venue cannot hold it: the inspector watches prices and closes itself."""


class ProtectiveMoved(Payload):
    """A protective order moved to a new price, such as a stop trailed or moved to break-even."""

    event_type = "inspector.protective.moved"

    order_id: str
    symbol: str
    kind: ProtectiveKind
    previous_price: Decimal
    price: Decimal
    reason: str
    emulated: bool = False


class ProtectiveTriggered(Payload):
    """A protective order that fired and closed all or part of its position."""

    event_type = "inspector.protective.triggered"

    order_id: str
    symbol: str
    kind: ProtectiveKind
    trigger_price: Decimal
    fill_price: Decimal | None = None
    amount: Amount
    emulated: bool = False
    """True when the inspector saw the price reach it and sent `close_order_id` itself."""
    close_order_id: str | None = None
    reason: str = ""


class FillAudited(Payload):
    """How well an order was executed: slippage against the intended price, fees and fill rate."""

    event_type = "inspector.fill_audit"

    order_id: str
    decision_id: str | None = None
    symbol: str
    intended_price: Decimal
    average_price: Decimal
    slippage_bps: float
    fees: Decimal
    fee_currency: str
    fill_rate: Unit
    partials: NonNegativeInt
    latency_ms: NonNegativeFloat
    """Decision received to last fill, on the kernel's clock: market time in a replay (0.0 when
    the fill came on the decision's own candle), wall time live."""
    wall_latency_ms: NonNegativeFloat | None = None
    """Decision received to last fill seen, in wall-clock time whatever the kernel's clock; None
    for an order no decision of this process placed (a guard, a close) or audits made before."""
    tolerance_bps: NonNegativeFloat | None = None
    """The policy's `market.max_slippage_bps` for an entry; None where slippage is unbounded."""
    past_tolerance: bool = False
    """True when the entry filled worse than `tolerance_bps` from its intended price: the
    venue's order could not cap it (entries go out as market orders), so the audit says so."""


class AccountReconciled(Payload):
    """Local orders, positions and balances checked against the exchange; 0 divergences is clean."""

    event_type = "inspector.reconciled"

    account: str
    exchange: str
    orders_checked: NonNegativeInt
    positions_checked: NonNegativeInt
    balances_checked: NonNegativeInt
    divergences: NonNegativeInt
    duration_ms: NonNegativeFloat


class DivergenceFound(Payload):
    """One record where local state and the exchange disagree, and what the inspector did."""

    event_type = "inspector.divergence"

    account: str
    exchange: str
    kind: Literal["order", "position", "balance"]
    key: str
    local: str | None
    remote: str | None
    action: Literal["flagged", "adopted_remote", "cancelled", "closed"]


class StrategyCapital(Model):
    """How one strategy uses capital: utilisation, suppression and reservation."""

    in_positions: Decimal
    """Entry notional of the strategy's open positions."""
    reserved: Decimal
    """Notional held by the strategy's open (entry) orders."""
    utilisation: NonNegativeFloat
    """(in_positions + reserved) / equity."""
    decisions: NonNegativeInt
    blocked: dict[str, NonNegativeInt] = Field(default_factory=dict)
    """Decisions and signals stopped, by `stage:<advisor stage>` or `policy:<name>`."""


class KpiReported(Payload):
    """Trading results of an account over a period, and where it stands now (optional fields)."""

    # The fields after `sharpe` are the live figures the studio's Risk and Capital screens read:
    # equity, P&L, drawdown against its limit, exposure, each policy's state and capital
    # efficiency per strategy.

    event_type = "inspector.kpi"

    account: str
    period: Literal["hour", "day", "week", "month"]
    period_start: UtcDatetime
    period_end: UtcDatetime
    trades: NonNegativeInt
    win_rate: Unit
    profit_factor: NonNegativeFloat | None = None
    expectancy: Decimal
    pnl: Decimal
    pnl_currency: str
    max_drawdown: Unit
    sharpe: float | None = None
    equity: Decimal | None = None
    realised_pnl: Decimal | None = None
    unrealised_pnl: Decimal | None = None
    drawdown: Unit | None = None
    """Drawdown from peak equity now (0..1)."""
    drawdown_limit: Unit | None = None
    """`drawdown.from_peak_pct` as a fraction; None when the policy file sets none."""
    daily_loss: Unit | None = None
    """Loss since the trading day's start equity now (0..1; 0 when up on the day)."""
    daily_loss_limit: Unit | None = None
    """`drawdown.daily_loss_pct` as a fraction; None when the policy file sets none."""
    exposure: Decimal | None = None
    """Notional of open positions."""
    policies: dict[str, str] = Field(default_factory=dict)
    """Each policy's state now: `ok`, or the action it would take and why."""
    strategies: dict[str, StrategyCapital] = Field(default_factory=dict)


class AlertRaised(Payload):
    """Something an operator should see, with how urgently."""

    event_type = "inspector.alert"

    severity: Severity
    message: str
    policy: str | None = None
    subject: str | None = None
    """What the alert is about: an account, a symbol or an app id."""


class ThrottleOrdered(Payload):
    """The inspector told one detector instance to mute its signals until `until`."""

    event_type = "inspector.throttle"

    instance: str
    until: UtcDatetime
    policy: str
    reason: str


EVENTS: tuple[type[Payload], ...] = (
    VerdictIssued,
    VerdictPending,
    ProtectivePlaced,
    ProtectiveMoved,
    ProtectiveTriggered,
    FillAudited,
    AccountReconciled,
    DivergenceFound,
    KpiReported,
    AlertRaised,
    ThrottleOrdered,
)
