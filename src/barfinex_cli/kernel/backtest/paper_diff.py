"""`bfx paper diff`: a paper session's fills beside a backtest of the same window, trade by trade.

A paper session is what `bfx up` (or `bfx provider start` with the roles) recorded in a data
directory: SESSION names that directory, whose `audit.db` holds the session's signals, decisions,
verdicts and fills. The window is the session's own: from its first to its last base candle on
the bus. The backtest plays that window through the pipeline (`engine.py`) with the strategies,
policy and replay the caller gives (the ones the session ran), and the two are paired order by
order on what makes an order the same order in both: the symbol, the candle of the signal behind
its decision, the side, and the order's role (entry, stop, take-profit, exit). For each pair the
fill price and time are compared; an order on one side only is explained from the other side's
audit log (the decision was rejected at an advisor stage, the inspector's verdict blocked it, or
no signal fired at all).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORDER_TYPES = ["order.filled", "order.partially_filled"]
ROLES = {"e": "entry", "sl": "stop_loss", "tp": "take_profit", "x": "exit"}
PRICE_TOLERANCE_BPS = 0.01


@dataclass(frozen=True)
class Key:
    """What makes an order the same order in a session and a backtest."""

    symbol: str
    signal_ms: int
    """Open time of the candle whose signal led to the decision."""
    side: str
    role: str


@dataclass(frozen=True)
class Leg:
    """One order's fills on one side: where and when it filled, how much, and its decision."""

    key: Key
    time_ms: int
    price: float
    quantity: float
    fees: float
    decision_entry: float | None


@dataclass(frozen=True)
class Difference:
    """One order compared: `kind` is same, price, timing, size, session_only or backtest_only."""

    key: Key
    kind: str
    session: Leg | None
    backtest: Leg | None
    why: str


@dataclass(frozen=True)
class Window:
    """The session's played window: first candle open, last candle close, base timeframe."""

    start_ms: int
    end_ms: int
    timeframe: str
    symbols: tuple[str, ...]


def session_window(audit: Path, exclude: str | None = None) -> Window:
    """Return the window a session played, read from its audit log's base candles."""
    from barfinex_cli.contracts.times import to_ms
    from barfinex_cli.errors import NotFound
    from barfinex_cli.market.candles import timeframe_ms
    from barfinex_cli.store.audit import AuditStore

    if not audit.is_file():
        raise NotFound(f"no session at {audit.parent}: it holds no audit.db — name the data "
                       "directory of a `bfx up` run (BFX_HOME of that run)")  # fmt: skip
    with AuditStore(audit, read_only=True) as store:
        candles = [
            e.payload
            for e in store.query(["market.candle"], limit=None)
            if exclude is None or exclude not in e.source
        ]
    if not candles:
        raise NotFound(f"the session at {audit.parent} recorded no candles — nothing to compare")
    base = min({c.timeframe for c in candles}, key=timeframe_ms)
    ours = [c for c in candles if c.timeframe == base]
    opens = [to_ms(c.open_time) for c in ours]
    return Window(
        min(opens), max(opens) + timeframe_ms(base), base, tuple(sorted({c.symbol for c in ours}))
    )


def legs(audit: Path, *, only: str | None = None, exclude: str | None = None) -> list[Leg]:
    """Return every order's fills in `audit`, keyed; `only`/`exclude` filter on the source."""
    from barfinex_cli.store.audit import AuditStore

    with AuditStore(audit, read_only=True) as store:
        events = store.query([*ORDER_TYPES, "advisor.decision", "detector.signal"], limit=None)
    return _legs(e for e in events if _mine(e, only, exclude))


def _mine(event: Any, only: str | None, exclude: str | None) -> bool:
    """Tell whether an event belongs to the side asked for, by its source.

    Signals are always kept: a backtest's detectors keep their strategy's name as source, and
    a signal is only ever reached from a decision by its (unique) id.
    """
    if event.type == "detector.signal":
        return True
    return (only is None or only in event.source) and (
        exclude is None or exclude not in event.source
    )


def _legs(events: Iterable[Any]) -> list[Leg]:
    from barfinex_cli.contracts.times import to_ms

    signals: dict[str, int] = {}
    decisions: dict[str, tuple[str, float]] = {}
    fills: dict[str, list[Any]] = {}
    for e in events:
        if e.type == "detector.signal":
            signals[e.id] = to_ms(e.payload.candle_time)
        elif e.type == "advisor.decision":
            decisions[e.id] = (e.payload.signal_id, float(e.payload.entry))
        else:
            fills.setdefault(e.payload.order.client_order_id, []).append(e.payload)
    out: list[Leg] = []
    for cid, got in fills.items():
        order = got[-1].order
        decision = decisions.get(order.decision_id or "")
        signal_ms = signals.get(decision[0], -1) if decision else -1
        tag = cid.rsplit("-", 1)[-1].rstrip("0123456789")
        qty = sum(float(p.fill.amount) for p in got)
        notional = sum(float(p.fill.amount) * float(p.fill.price) for p in got)
        out.append(Leg(
            Key(order.symbol, signal_ms, order.side, ROLES.get(tag, "order")),
            to_ms(got[0].fill.time), notional / qty if qty else 0.0, qty,
            sum(float(p.fill.fee) for p in got), decision[1] if decision else None,
        ))  # fmt: skip
    return sorted(out, key=lambda leg: (leg.time_ms, leg.key.symbol, leg.key.role))


def blocked(audit: Path, *, only: str | None = None, exclude: str | None = None) -> dict[Any, str]:
    """Return why each signal (symbol, candle open ms, side) led to no order in `audit`."""
    from barfinex_cli.contracts.times import to_ms
    from barfinex_cli.store.audit import AuditStore

    types = ["detector.signal", "advisor.decision", "advisor.decision.rejected",
             "advisor.signal.dropped", "inspector.verdict"]  # fmt: skip
    with AuditStore(audit, read_only=True) as store:
        events = [e for e in store.query(types, limit=None) if _mine(e, only, exclude)]
    signals = {e.id: e.payload for e in events if e.type == "detector.signal"}
    decided: dict[str, Any] = {}
    why: dict[Any, str] = {}

    def key(signal_id: str) -> Any:
        s = signals.get(signal_id)
        side = "buy" if s is not None and s.direction == "long" else "sell"
        return None if s is None else (s.symbol, to_ms(s.candle_time), side)

    for e in events:
        p = e.payload
        if e.type == "advisor.decision":
            decided[e.id] = key(p.signal_id)
        elif e.type == "advisor.decision.rejected":
            why[key(p.signal_id)] = f"the advisor rejected it at {p.stage}: {p.reason}"
        elif e.type == "advisor.signal.dropped":
            why[key(p.signal_id)] = f"the advisor dropped the signal ({p.reason})"
        elif e.type == "inspector.verdict" and p.verdict != "ALLOW":
            why[decided.get(p.decision_id)] = (
                f"the inspector's verdict was {p.verdict} by {p.policy}: {p.reason}"
            )
    return why


def compare(
    session: list[Leg],
    backtest: list[Leg],
    session_why: dict[Any, str],
    backtest_why: dict[Any, str],
) -> list[Difference]:
    """Pair the two sides' orders by `Key` and say, for each, whether and why they differ."""
    ours = {leg.key: leg for leg in session}
    theirs = {leg.key: leg for leg in backtest}
    out: list[Difference] = []
    for key in sorted(set(ours) | set(theirs), key=lambda k: (k.signal_ms, k.symbol, k.role)):
        a, b = ours.get(key), theirs.get(key)
        signal = (key.symbol, key.signal_ms, _entry_side(key))
        if a is None:
            why = session_why.get(signal, "no such order in the session (no signal, or the "
                                  "session ended before it)")  # fmt: skip
            out.append(Difference(key, "backtest_only", None, b, f"session: {why}"))
        elif b is None:
            why = backtest_why.get(signal, "no such order in the backtest")
            out.append(Difference(key, "session_only", a, None, f"backtest: {why}"))
        else:
            out.append(_pair(key, a, b))
    return out


def _entry_side(key: Key) -> str:
    if key.role == "entry":
        return key.side
    return "sell" if key.side == "buy" else "buy"  # a stop or exit closes the entry's side


def _pair(key: Key, a: Leg, b: Leg) -> Difference:
    bps = (a.price - b.price) / b.price * 10_000 if b.price else 0.0
    notes = []
    kind = "same"
    if abs(bps) > PRICE_TOLERANCE_BPS:
        kind = "price"
        notes.append(f"fill price {a.price:.8g} vs {b.price:.8g} ({bps:+.2f} bps)")
        if (
            a.decision_entry is not None
            and b.decision_entry is not None
            and (abs(a.decision_entry - b.decision_entry) > 1e-9 * max(1.0, b.decision_entry))
        ):
            notes.append(
                f"the decision priced its entry at {a.decision_entry:.8g} in the session, "
                f"{b.decision_entry:.8g} in the backtest (a different quote when it decided)"
            )
    if a.time_ms != b.time_ms:
        minutes = (a.time_ms - b.time_ms) / 60_000
        kind = "timing" if kind == "same" else kind
        notes.append(f"filled {minutes:+g} min from the backtest's fill")
    if abs(a.quantity - b.quantity) > 1e-12 * max(1.0, b.quantity):
        kind = "size" if kind == "same" else kind
        notes.append(f"size {a.quantity:.8g} vs {b.quantity:.8g}")
    return Difference(key, kind, a, b, "; ".join(notes) or "identical")


@dataclass(frozen=True)
class DiffReport:
    """A session compared with its backtest: the window, the run id, and every order paired."""

    session: Path
    window: Window
    run_id: str
    differences: tuple[Difference, ...]

    @property
    def same(self) -> int:
        """How many orders match in price, time and size."""
        return sum(d.kind == "same" for d in self.differences)


def diff_session(settings: Any, session: Path, spec: Any) -> DiffReport:
    """Backtest the window the session at `session` played; pair and explain every order.

    `spec` (a `PipelineSpec`) names the strategies, policy and replay the session ran; its
    window and run id are set here.
    """
    from dataclasses import replace

    from barfinex_cli.kernel.backtest.engine import backtest, new_run_id

    audit = session / "audit.db"
    run_id = new_run_id()
    window = session_window(audit, exclude=run_id)
    played = replace(
        spec, start_ms=window.start_ms, end_ms=window.end_ms, run_id=run_id, history=None,
        symbols=spec.symbols or window.symbols,
    )  # fmt: skip
    backtest(settings, played)
    ours, theirs = settings.audit_path, audit
    found = compare(
        legs(theirs, exclude=run_id), legs(ours, only=run_id),
        blocked(theirs, exclude=run_id), blocked(ours, only=run_id),
    )  # fmt: skip
    return DiffReport(session, window, run_id, tuple(found))
