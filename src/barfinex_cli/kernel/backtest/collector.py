"""What a pipeline backtest learns off the bus, and the `BacktestResult` it makes of it.

The engine (`engine.py`) runs the roles; this module is its reader: a consumer group of its own
collects the fills, the signals and the decisions that led to no order while the run goes, and
`result_of` turns them, with the played candles' closes, into fills, round trips, the equity
curve and the metrics.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from barfinex_cli.kernel.backtest.result import BacktestResult, EquityCurve, Fill

if TYPE_CHECKING:
    from barfinex_cli.bus.base import Consumer
    from barfinex_cli.kernel.backtest.engine import PipelineSpec
    from barfinex_cli.kernel.backtest.lockstep import LockstepReplay

COLLECTED = (
    "order.filled",
    "order.partially_filled",
    "detector.signal",
    "advisor.decision",
    "advisor.decision.rejected",
    "inspector.verdict",
)
REASONS = {"e": "entry", "sl": "stop_loss", "tp": "take_profit", "x": "exit"}


@dataclass
class Seen:
    """What the collector read off the bus during a run."""

    fills: list[Fill] = field(default_factory=list)
    decisions: dict[str, str] = field(default_factory=dict)
    """Decision event id -> its trace (the candle's): a fill joins its decision's trace."""
    signals: int = 0
    signal_moments: set[int] = field(default_factory=set)
    """Close times of the candles the detectors' signals came from."""
    blocked: dict[str, int] = field(default_factory=dict)


async def collect(consumer: Consumer, seen: Seen, stop: asyncio.Event) -> None:
    """Read fills, signals and the blocks off the bus until stopped and nothing is left."""
    while True:
        deliveries = await consumer.fetch(500, 50)
        for delivery in deliveries:
            note(delivery.event, seen)
        if deliveries:
            await consumer.ack(deliveries)
        elif stop.is_set():
            return


def note(event: Any, seen: Seen) -> None:
    """Take what a backtest reports from one event: a fill, a signal, a decision, a block."""
    from barfinex_cli.contracts.times import to_ms
    from barfinex_cli.market.candles import timeframe_ms

    payload = event.payload
    kind = event.type
    if kind in ("order.filled", "order.partially_filled"):
        order, fill = payload.order, payload.fill
        tag = order.client_order_id.rsplit("-", 1)[-1].rstrip("0123456789")
        seen.fills.append(
            Fill(
                order_id=order.client_order_id, time_ms=to_ms(fill.time), symbol=order.symbol,
                side=order.side, quantity=float(fill.amount), price=float(fill.price),
                fee=float(fill.fee), reason=REASONS.get(tag, "order"),
                trace_id=order.decision_id,  # made the decision's trace once the run ends
            )
        )  # fmt: skip
    elif kind == "advisor.decision":
        seen.decisions[event.id] = event.trace_id
    elif kind == "detector.signal":
        seen.signals += 1
        span = timeframe_ms(payload.timeframe)
        seen.signal_moments.add(to_ms(payload.candle_time) + span)
    elif kind == "advisor.decision.rejected":
        key = f"advisor:{payload.stage}"
        seen.blocked[key] = seen.blocked.get(key, 0) + 1
    elif kind == "inspector.verdict" and payload.verdict != "ALLOW":
        key = f"inspector:{payload.policy}"
        seen.blocked[key] = seen.blocked.get(key, 0) + 1


def result_of(
    run_id: str,
    spec: PipelineSpec,
    connector: LockstepReplay,
    seen: Seen,
    closes: dict[str, list[tuple[int, float]]],
    wanted: set[str],
) -> BacktestResult:
    """Return the run's result: fills joined to their decisions' traces, trades, equity.

    `wanted` holds the strategies' symbols: the title names them (and any traded), not every
    symbol the replay carried.
    """
    import numpy as np

    from barfinex_cli.kernel.backtest.metrics import compute_metrics
    from barfinex_cli.kernel.backtest.roundtrips import equity_curve, trades_of
    from barfinex_cli.provider.paper.broker import DEFAULT_ACCOUNTS

    initial = float(DEFAULT_ACCOUNTS["paper"]["USDT"])
    fills = sorted(
        (replace(f, trace_id=seen.decisions.get(f.trace_id or "")) for f in seen.fills),
        key=lambda f: (f.time_ms, f.order_id),
    )
    trades = trades_of(fills)
    equity = equity_curve(fills, closes, initial)
    fees = sum(f.fee for f in fills)
    timeframe = connector.base_timeframe
    metrics = compute_metrics(equity, trades, fees, timeframe, initial_equity=initial)
    bars = max((len(series) for series in closes.values()), default=0)
    curve = EquityCurve(  # the charts draw from it, as for a vectorised run
        np.fromiter((p.time_ms for p in equity), np.int64, len(equity)),
        np.fromiter((p.equity for p in equity), np.float64, len(equity)),
    )
    return BacktestResult(
        run_id=run_id, mode="pipeline",
        strategy=",".join(p.stem for p in spec.strategies), exchange=connector.exchange,
        symbols=_symbols(wanted, closes, fills), timeframe=timeframe,
        start_ms=equity[0].time_ms if equity else 0, end_ms=equity[-1].time_ms if equity else 0,
        bars=bars, initial_equity=initial, signals=seen.signals, metrics=metrics,
        fills=tuple(fills), trades=tuple(trades), equity=tuple(equity),
        blocked=dict(sorted(seen.blocked.items())), curve=curve,
    )  # fmt: skip


def _symbols(
    wanted: set[str], closes: dict[str, list[tuple[int, float]]], fills: list[Fill]
) -> tuple[str, ...]:
    """Return the symbols the run is about: the strategies' (and any traded), not the replay's."""
    return tuple(sorted((wanted & set(closes)) | {f.symbol for f in fills})) or tuple(
        sorted(closes)
    )
