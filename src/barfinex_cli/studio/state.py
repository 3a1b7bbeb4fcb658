"""What the studio knows, in one headless object the screens read and the data layer writes.

The feed's live events (`apply`) and the REST snapshots (`apply_snapshot`) land here; screens
never fetch anything, they draw from this state when told it changed. Every collection is
bounded (deques, capped maps), so hours of live events keep memory flat. Each section carries a
version that moves when the section changes, so a screen redraws only what moved.

Sections: `connection`, `health`, `apps`, `signals`, `decisions`, `verdicts`, `orders`,
`positions`, `inspector`, `kpi`, `quality`, `candles`.

No Textual here (the headless contracts): `tests/studio/test_state.py` exercises it alone.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from barfinex_cli.contracts.advisor import DecisionMade, DecisionRejected
from barfinex_cli.contracts.apps import AppLost, AppRegistered, HeartbeatSent
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.inspector import (
    AccountReconciled,
    DivergenceFound,
    KpiReported,
    VerdictIssued,
    VerdictPending,
)
from barfinex_cli.contracts.market import (
    CandleClosed,
    ConnectorHealth,
    GapDetected,
    IncidentEscalated,
    IncidentOpened,
    IncidentResolved,
)
from barfinex_cli.contracts.orders import (
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderState,
    PositionChanged,
)
from barfinex_cli.contracts.rest import AppInfo, ConnectorStatus, HealthResponse, SeriesInfo

Series = tuple[str, str, str]
"""A candle series: exchange, symbol, timeframe."""
LinkState = Literal["connecting", "connected", "disconnected", "unreachable", "refused"]
ROLES = ("provider", "detector", "advisor", "inspector")
"""The roles the studio shows; each screen says which of them are not running."""
MAX_SIGNALS = 1000
MAX_DECISIONS = 500
MAX_VERDICTS = 500
MAX_CANDLES = 2000
MAX_FILLS = 500
MAX_ORDERS = 500
"""Orders held: the latest, and before them every one still open (the market screen draws the
open stops and take-profits of a held position, however old); a poll asks for as many."""
ORDER_DONE = ("filled", "cancelled", "rejected")
_TF_MINUTES = {"m": 1, "h": 60, "d": 1440, "w": 10080}


@dataclass(frozen=True)
class Connection:
    """The link to the provider: its state, why, and when the next try comes."""

    state: LinkState = "connecting"
    detail: str = ""
    retry_in_s: float | None = None


@dataclass(frozen=True)
class RoleView:
    """What one role's REST API answered for the studio, or why it could not be asked."""

    app: str | None
    """The registry name the studio reached it under; None when no such role is alive."""
    data: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """One poll of the provider's REST routes and, through its proxy, the advisor and inspector."""

    health: HealthResponse
    apps: list[AppInfo]
    connectors: list[ConnectorStatus]
    series: list[SeriesInfo]
    positions: list[PositionChanged]
    orders: list[OrderState]
    paper: bool
    advisor: RoleView
    inspector: RoleView


def _bounded_put(mapping: OrderedDict[str, Any], key: str, value: Any, cap: int) -> None:
    mapping[key] = value
    mapping.move_to_end(key)
    while len(mapping) > cap:
        mapping.popitem(last=False)


def _put_order(orders: OrderedDict[str, OrderState], order: OrderState) -> None:
    """Hold `order` as the newest; past `MAX_ORDERS`, forget the oldest done one (else oldest)."""
    orders[order.client_order_id] = order
    orders.move_to_end(order.client_order_id)
    while len(orders) > MAX_ORDERS:
        done = next((cid for cid, o in orders.items() if o.status in ORDER_DONE), None)
        if done is None:
            orders.popitem(last=False)
        else:
            del orders[done]


def timeframe_delta(timeframe: str) -> timedelta:
    """Return the length of a timeframe such as `1m`, `4h` or `1d`."""
    return timedelta(minutes=int(timeframe[:-1]) * _TF_MINUTES[timeframe[-1]])


class StudioState:
    """Everything the screens draw, bounded, with a version per section."""

    def __init__(self) -> None:
        self.versions: Counter[str] = Counter()
        self.connection = Connection()
        self.health: HealthResponse | None = None
        self.paper = False
        self.market_time: datetime | None = None
        self.apps: list[AppInfo] = []
        self.connectors: dict[str, ConnectorStatus | ConnectorHealth] = {}
        self.series: list[SeriesInfo] = []
        self.signals: deque[Envelope[SignalGenerated]] = deque(maxlen=MAX_SIGNALS)
        self.signal_of: OrderedDict[str, SignalGenerated] = OrderedDict()
        self.decisions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Advisor outcomes by event id (oldest first): the advisor's summaries, live ones too."""
        self.advisor = RoleView(None, problem="not asked yet")
        self.verdicts: deque[Envelope[VerdictIssued]] = deque(maxlen=MAX_VERDICTS)
        self.verdict_of: OrderedDict[str, VerdictIssued] = OrderedDict()
        self.pending_of: OrderedDict[str, VerdictPending] = OrderedDict()
        """Decisions the inspector holds unjudged (provider away): a notice, not a verdict."""
        self.orders: OrderedDict[str, OrderState] = OrderedDict()
        self.fills: deque[Envelope[Any]] = deque(maxlen=MAX_FILLS)
        self.positions: dict[tuple[str, str], PositionChanged] = {}
        self.inspector = RoleView(None, problem="not asked yet")
        self.kpi: KpiReported | None = None
        self.reconciled: AccountReconciled | None = None
        self.divergences: deque[DivergenceFound] = deque(maxlen=50)
        self.quality: dict[Series, tuple[float, str]] = {}
        """Per series: the last quality score an incident reported, and the incident's state."""
        self.gaps: Counter[Series] = Counter()
        self.candles: dict[Series, deque[CandleClosed]] = {}
        """Live closed candles per series (the Market screen joins them to REST history)."""
        self.events_seen = 0
        self.skipped = 0

    # --- derived --------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """Return `replay` (market clock), `paper` or `live`; `?` before the first snapshot."""
        if self.health is None:
            return "?"
        if self.health.clock == "market" or self.health.replay_done is not None:
            return "replay"
        return "paper" if self.paper else "live"

    def alive(self, role: str) -> list[AppInfo]:
        """Return the registered apps of `role` that are alive."""
        return [a for a in self.apps if a.role == role and a.status == "alive"]

    def missing_roles(self, roles: tuple[str, ...] = ROLES) -> list[str]:
        """Return which of `roles` have no live app (the provider counts when it answers)."""
        out = []
        for role in roles:
            if role == "provider":
                if self.connection.state != "connected" and self.health is None:
                    out.append(role)
            elif not self.alive(role):
                out.append(role)
        return out

    # --- writers --------------------------------------------------------------------------------

    def set_connection(self, connection: Connection) -> None:
        """Record the link's state."""
        if connection != self.connection:
            self.connection = connection
            self.versions["connection"] += 1

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Take in one REST poll."""
        self.health = snap.health
        self.paper = snap.paper
        if snap.health.market_time is not None:
            self.market_time = snap.health.market_time
        self.versions["health"] += 1
        self.apps = sorted(snap.apps, key=lambda a: (a.role, a.name))
        self.connectors = {c.name: c for c in snap.connectors}
        self.series = snap.series
        self.versions["apps"] += 1
        self.positions = {(p.account, p.symbol): p for p in snap.positions if p.size}
        self.versions["positions"] += 1
        # a poll holds every open order and the latest: one held as open that the poll lacks
        # was closed since, out of the window, with its event missed (a stale stop line else)
        polled = {o.client_order_id for o in snap.orders}
        for cid in [c for c, o in self.orders.items() if o.status not in ORDER_DONE]:
            if cid not in polled:
                del self.orders[cid]
        for order in snap.orders:
            _put_order(self.orders, order)
        self.versions["orders"] += 1
        self.advisor = snap.advisor
        for row in reversed(snap.advisor.data.get("decisions", [])):
            if row.get("id"):
                _bounded_put(self.decisions, str(row["id"]), row, MAX_DECISIONS)
        self.versions["decisions"] += 1
        self.inspector = snap.inspector
        kpi = snap.inspector.data.get("kpi")
        if kpi is not None:
            self.kpi = KpiReported.model_validate(kpi)
            self.versions["kpi"] += 1
        self.versions["inspector"] += 1

    def apply(self, event: Envelope[Any]) -> str | None:
        """Take in one live event; return the section it changed, or None if none."""
        self.events_seen += 1
        payload = event.payload
        section = self._apply(event, payload)
        if section is not None:
            self.versions[section] += 1
        return section

    def _apply(self, event: Envelope[Any], payload: Any) -> str | None:
        if isinstance(payload, CandleClosed):
            key = (payload.exchange, payload.symbol, payload.timeframe)
            held = self.candles.get(key)
            if held is None:
                held = self.candles[key] = deque(maxlen=MAX_CANDLES)
            held.append(payload)
            end = payload.open_time + timeframe_delta(payload.timeframe)
            if self.market_time is None or end > self.market_time:
                self.market_time = end
                self.versions["health"] += 1
            return "candles"
        if isinstance(payload, SignalGenerated):
            self.signals.append(event)
            _bounded_put(self.signal_of, event.id, payload, MAX_SIGNALS)
            return "signals"
        if isinstance(payload, DecisionMade | DecisionRejected):
            row = _decision_row(event)
            signal = self.signal_of.get(payload.signal_id)
            if signal is not None:  # a rejection names no symbol: its signal does
                row.setdefault("symbol", signal.symbol)
                row.setdefault("direction", signal.direction)
            _bounded_put(self.decisions, event.id, row, MAX_DECISIONS)
            return "decisions"
        if isinstance(payload, VerdictIssued):
            self.verdicts.append(event)
            _bounded_put(self.verdict_of, payload.decision_id, payload, MAX_VERDICTS)
            self.pending_of.pop(payload.decision_id, None)
            return "verdicts"
        if isinstance(payload, VerdictPending):
            if payload.decision_id not in self.verdict_of:
                _bounded_put(self.pending_of, payload.decision_id, payload, MAX_VERDICTS)
            return "verdicts"
        if isinstance(payload, OrderFilled | OrderPartiallyFilled | OrderCancelled | OrderRejected):
            order: OrderState = payload.order
            _put_order(self.orders, order)
            if isinstance(payload, OrderFilled | OrderPartiallyFilled):
                self.fills.append(event)
            return "orders"
        if isinstance(payload, PositionChanged):
            where = (payload.account, payload.symbol)
            if payload.size:
                self.positions[where] = payload
            else:
                self.positions.pop(where, None)
            return "positions"
        if isinstance(payload, KpiReported):
            self.kpi = payload
            return "kpi"
        if isinstance(payload, AccountReconciled):
            self.reconciled = payload
            return "inspector"
        if isinstance(payload, DivergenceFound):
            self.divergences.append(payload)
            return "inspector"
        if isinstance(payload, ConnectorHealth):
            self.connectors[payload.connector] = payload
            return "apps"
        if isinstance(payload, IncidentOpened | IncidentResolved | IncidentEscalated):
            key = (payload.exchange, payload.symbol, payload.timeframe)
            what = {IncidentOpened: "open", IncidentResolved: "resolved"}.get(
                type(payload), "escalated"
            )
            self.quality[key] = (payload.quality_score, what)
            return "quality"
        if isinstance(payload, GapDetected):
            self.gaps[(payload.exchange, payload.symbol, payload.timeframe)] += 1
            return "quality"
        if isinstance(payload, AppRegistered | HeartbeatSent | AppLost):
            return self._apply_app(payload)
        return None

    def _apply_app(self, payload: AppRegistered | HeartbeatSent | AppLost) -> str:
        status = "lost" if isinstance(payload, AppLost) else "alive"
        health = payload.status if isinstance(payload, HeartbeatSent) else "ok"
        for i, app in enumerate(self.apps):
            if app.id == payload.app_id:
                self.apps[i] = app.model_copy(
                    update={"status": status, "health": health, "last_seen": payload.last_seen,
                            "silent_for_s": getattr(payload, "silent_for_s", 0.0)}
                )  # fmt: skip
                return "apps"
        if isinstance(payload, AppRegistered):
            self.apps.append(
                AppInfo(
                    id=payload.app_id, name=payload.name, role=payload.role, url=payload.url,
                    version=payload.version, started_at=payload.started_at,
                    last_seen=payload.last_seen, status="alive", health="ok", silent_for_s=0.0,
                )
            )  # fmt: skip
            self.apps.sort(key=lambda a: (a.role, a.name))
        return "apps"


def _decision_row(event: Envelope[Any]) -> dict[str, Any]:
    """Return a live advisor outcome in the shape of the advisor's `/api/v1/decisions` rows."""
    payload = event.payload
    row: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "signal_id": payload.signal_id,
        "trace_id": event.trace_id,
        "ts": event.ts.isoformat(),
        "conviction": payload.conviction,
    }
    if isinstance(payload, DecisionMade):
        row.update(
            symbol=payload.symbol, side=payload.side, entry=str(payload.entry),
            stop=str(payload.stop), take_profit=str(payload.take_profit), size=str(payload.size),
            regime=payload.regime, direction="long" if payload.side == "buy" else "short",
        )  # fmt: skip
    else:
        row.update(stage=payload.stage, reason=payload.reason)
    return row
