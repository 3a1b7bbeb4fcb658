"""The full-pipeline backtest: history through the live stack's own roles, in one process.

`bfx backtest` (default mode) runs the provider with its paper broker, the detectors, the advisor
and the inspector exactly as `bfx up --single-process` does (`kernel.stack.run_in_process`, one
`MemoryBus`, one market clock), on a replay that plays in lock-step (`lockstep.py`): each market
moment is played only when every role has finished the last one, which is the timing a paced
`bfx up` on Redis has, so both place the same orders at the same times, sides, sizes and prices.

Each run has a run id (`bt-` and 12 hex digits). Its scratch stores (market, paper account,
inspector state) live in `DATA_DIR/backtests/RUN_ID/` and are removed after the run, so a run
never resumes another's account or mixes with the live stack's; its events go to the user's
audit log (`DATA_DIR/audit.db`) with the run id in their sources (`provider/bt-...`,
`advisor/advisor@bt-...`, `inspector/inspector.bt-...`), so `bfx trace` walks a backtest order
back to its candle. The result is kept as `DATA_DIR/backtests/RUN_ID.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from barfinex_cli.kernel.backtest.collector import COLLECTED, Seen, collect, result_of
from barfinex_cli.kernel.backtest.result import BacktestResult

if TYPE_CHECKING:
    from barfinex_cli.kernel.backtest.lockstep import LockstepReplay
    from barfinex_cli.kernel.stack import StackRun
    from barfinex_cli.runtime.settings import Settings

log = logging.getLogger("bfx.backtest")

Progress = Callable[[int, int], None]
"""Called with (moments played, moments in the replay)."""

WALL_NEVER_S = 10.0**9
"""A wall-clock interval no run reaches."""
MAX_BPS = 1000
"""The most fees or slippage a run accepts, in basis points (10 %): more is a typo."""


@dataclass(frozen=True)
class PipelineSpec:
    """What to backtest: strategies, the replay, and the settings that differ from bfx.toml."""

    strategies: tuple[Path, ...]
    replay: Path | None = None
    """Candle files to replay; None replays the synthetic market."""
    symbols: tuple[str, ...] = ()
    days: float | None = None
    history: int | None = None
    """Base candles kept as history before the played part (the roles warm up on them)."""
    start_ms: int | None = None
    """Play from the candle opening at this time (the rest before it is history)."""
    end_ms: int | None = None
    """Play nothing after this market time (a candle closing later is not played)."""
    policy: Path | None = None
    model: Path | None = None
    """An advisor model file (walk-forward folds train one)."""
    fees_bps: float | None = None
    """Taker fee of the paper broker in basis points (default: the broker's, 5)."""
    slippage_bps: float | None = None
    run_id: str | None = None
    keep: bool = False
    """Keep the scratch stores in DATA_DIR/backtests/RUN_ID/."""
    fast: bool = True
    """Wait for the stack only on moments that can lead to an order (see `prepass.py`)."""


def new_run_id() -> str:
    """Return a fresh run id: `bt-` and the random end of a UUIDv7."""
    from barfinex_cli.contracts.ids import uuid7

    return "bt-" + uuid7().replace("-", "")[-12:]


def backtest(
    settings: Settings, spec: PipelineSpec, progress: Progress | None = None
) -> BacktestResult:
    """Run `spec` to its end; return the `BacktestResult` (blocking wrapper of `run_pipeline`)."""
    return asyncio.run(run_pipeline(settings, spec, progress))


async def run_pipeline(
    settings: Settings, spec: PipelineSpec, progress: Progress | None = None
) -> BacktestResult:
    """Play the replay through every role in lock-step; return what the run did.

    With `spec.fast`, a run whose detectors fired on a moment the pre-pass did not forecast is
    played again waiting on every moment (the forecast is checked, never trusted).
    """
    result, missed = await _run_once(settings, spec, progress)
    if not missed:
        return result
    log.warning(
        "backtest: the detectors fired where the pre-pass did not forecast; playing the "
        "window again with a wait on every moment",
        extra={"run": result.run_id, "moments": len(missed)},
    )
    again = replace(spec, fast=False, run_id=None if spec.run_id is None else spec.run_id + "-full")
    result, _ = await _run_once(settings, again, progress)
    return result


async def _run_once(
    settings: Settings, spec: PipelineSpec, progress: Progress | None
) -> tuple[BacktestResult, set[int]]:
    """Run once; return the result and the signal moments the fast path did not wait on."""
    from barfinex_cli.errors import UsageError
    from barfinex_cli.kernel.backtest.lockstep import BacktestBus, LockstepReplay, StackQuiet
    from barfinex_cli.kernel.backtest.prepass import MAX_SKIP, signal_moments
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.kernel.stack import run_in_process
    from barfinex_cli.runtime.datadir import writable

    for path in spec.strategies:
        if not path.is_file():
            raise UsageError(f"no strategy file at {path} — see `strategies/` for examples")
    for flag, bps in (("--fees", spec.fees_bps), ("--slippage", spec.slippage_bps)):
        if bps is not None and not 0 <= bps <= MAX_BPS:
            raise UsageError(f"{flag} {bps:g}: give basis points between 0 and {MAX_BPS}")
    run_id = spec.run_id or new_run_id()
    home = writable(settings.home)
    scratch = home / "backtests" / run_id
    if scratch.exists():
        raise UsageError(f"backtest run {run_id} exists already in {scratch} — pick another id")
    run_settings = settings.model_copy(
        update={"bus": "memory", "home": scratch, "namespace": f"backtest.{run_id}"}
    )
    provider = run_settings.provider.with_overrides(
        replay=spec.replay, days=spec.days, history=spec.history, symbols=spec.symbols or None
    ).model_copy(
        update={"exchange": None, "speed": None, "exit_at_end": True, "serve": False,
                "record": False, "paper": True, "wait_for_apps": 0,
                # the periodic integrity scan runs on wall time: a run's outcome must not
                # depend on how long it took, so only the scan at start runs
                "integrity_interval_s": WALL_NEVER_S}
    )  # fmt: skip
    connector = LockstepReplay(
        source=provider.replay, symbols=provider.symbols or None,
        timeframes=tuple(provider.timeframes), speed=None, skip=provider.history,
        days=provider.days, name=run_id, start_ms=spec.start_ms, end_ms=spec.end_ms,
    )  # fmt: skip
    detectors = [
        run_settings.detector.with_overrides(strategy=path, instance=path.stem).model_copy(
            update={"serve_health": False, "join_registry": False}
        )
        for path in spec.strategies
    ]
    advisor = run_settings.advisor.with_overrides(model=spec.model).model_copy(
        update={"serve_api": False, "join_registry": False, "consumer": f"advisor@{run_id}"}
    )
    inspector = run_settings.inspector.with_overrides(policy=spec.policy).model_copy(
        update={"serve_api": False, "join_registry": False, "instance": f"inspector.{run_id}"}
    )
    series = connector.load()
    if not connector.live_moments():
        raise UsageError(
            "nothing to play: no candle of the replay falls after its history and inside the "
            "window — lower --history, widen --from/--to, or give more data"
        )
    forecast: set[int] | None = None
    if spec.fast:
        forecast = signal_moments(
            spec.strategies, series, connector.tf_ms, connector.live_start_ms + connector.tf_ms
        )
    bus = BacktestBus(run_settings.namespace, maxlen=run_settings.bus_maxlen)
    seen = Seen()
    started = time.perf_counter()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    try:
        async with Kernel(run_settings, bus=bus, audit_path=settings.audit_path) as kernel:

            async def on_ready(run: StackRun) -> None:
                rt = run.provider.runtime
                assert rt is not None
                _set_costs(run, spec)
                quiet = StackQuiet(
                    bus, rt.flush, lambda: bool(rt.outbox or rt.candle_rows),
                    frozenset({"recorder", "backtest.collector"}),
                )  # fmt: skip
                total = _moments(connector)
                skipped = 0
                moved = _watch_broker(rt.broker)

                async def barrier(moment_ms: int, next_ms: int | None) -> None:
                    nonlocal skipped
                    # before a forecast moment too: the roles meet its signal caught up, as in
                    # the full lock-step (the advisor prices from the newest book it has read)
                    if (
                        forecast is not None
                        and moment_ms not in forecast
                        and next_ms not in forecast
                        and skipped < MAX_SKIP
                        and not moved.pop()
                        and _flat(rt.broker)
                    ):
                        skipped += 1
                    else:
                        skipped = 0
                        await quiet.wait()
                    if progress is not None:
                        progress(connector.moments, total)

                connector.barrier = barrier
                collector = await bus.consumer(
                    "backtest.collector", "collector", list(COLLECTED), start="0"
                )
                tasks.append(asyncio.create_task(collect(collector, seen, stop)))

            stack = await run_in_process(
                kernel, provider, detectors, asyncio.Event(),
                advisor_configs=[advisor], inspector_configs=[inspector],
                connector=connector, on_ready=on_ready,
            )  # fmt: skip
            stop.set()
            for task in tasks:
                await task
            closes = _closes(kernel, connector)
            # the symbols the detectors ran, not the file read again (user code runs once)
            wanted = {s for d in stack.detectors for s in d.strategy.symbols}
        wall_s = time.perf_counter() - started
        result = result_of(run_id, spec, connector, seen, closes, wanted)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        if not spec.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    save(home, result, wall_s)
    missed = seen.signal_moments - forecast if forecast is not None else set()
    return result, missed


class _Moved:
    """Whether the paper broker emitted anything (a fill, a cancel) since last asked."""

    def __init__(self) -> None:
        self.flag = False

    def pop(self) -> bool:
        flag, self.flag = self.flag, False
        return flag


def _watch_broker(broker: Any) -> _Moved:
    """Flag every payload the broker emits: a moment where it did must be waited on.

    A stop that fills on a candle leaves the account flat, but the inspector has still to
    learn of the loss (its cooldown starts from when it does), so that moment is not skipped.
    """
    moved = _Moved()
    emit = broker._emit

    async def flagged(payload: Any) -> None:
        moved.flag = True
        await emit(payload)

    broker._emit = flagged
    return moved


def _flat(broker: Any) -> bool:
    """Tell whether the paper broker holds no open order and no position."""
    from barfinex_cli.provider.paper.broker import PaperBroker

    if not isinstance(broker, PaperBroker):
        return False
    engine = broker._engine
    if engine.active:
        return False
    return all(p.size == 0 for held in engine.ledger.positions.values() for p in held.values())


def _set_costs(run: StackRun, spec: PipelineSpec) -> None:
    """Give the paper broker the run's fees and slippage (before any order is placed)."""
    if spec.fees_bps is None and spec.slippage_bps is None:
        return
    from barfinex_cli.provider.paper.broker import PaperBroker

    provider = run.provider
    rt = provider.runtime
    assert rt is not None and isinstance(rt.broker, PaperBroker)
    old = rt.broker.config
    broker = PaperBroker(
        rt.send,
        source=rt.source,
        clock=provider.clock.now,
        store=provider.paper_store,
        maker_fee_bps=old.maker_fee_bps if spec.fees_bps is None else Decimal(str(spec.fees_bps)),
        taker_fee_bps=old.taker_fee_bps if spec.fees_bps is None else Decimal(str(spec.fees_bps)),
        slippage_bps=(
            old.slippage_bps if spec.slippage_bps is None else Decimal(str(spec.slippage_bps))
        ),
        max_participation=old.max_participation,
        drive_timeframe=old.drive_timeframe,
    )
    rt.broker = rt.fed = broker
    rt.on_published = broker.published
    if provider.gateway_ctx is not None:
        provider.gateway_ctx.broker = broker


def _moments(connector: LockstepReplay) -> int:
    """Return how many distinct market times the replay will play (for the progress bar)."""
    return len(connector.live_moments())


def _closes(kernel: Any, connector: LockstepReplay) -> dict[str, list[tuple[int, float]]]:
    """Return each symbol's played base candles as (close ms, close), from the run's store."""
    from barfinex_cli.store.market import SeriesKey

    step = connector.tf_ms
    market = kernel.market_store()
    out: dict[str, list[tuple[int, float]]] = {}
    for symbol in sorted(connector.candle_symbols):
        key = SeriesKey(connector.exchange, symbol, connector.base_timeframe)
        rows = market.candles(key, since_ms=connector.live_start_ms)
        out[symbol] = [(r.open_ms + step, float(r.close)) for r in rows]
    return out


def save(home: Path, result: BacktestResult, wall_s: float) -> Path:
    """Keep the result beside the runs as `DATA_DIR/backtests/RUN_ID.json`."""
    import json

    folder = home / "backtests"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.run_id}.json"
    data = asdict(result)
    data["wall_s"] = round(wall_s, 3)
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(data, default=str))
    return path
