"""Self-healing of candle series: decide, plan, repair from history, verify, or hand over.

A scan (`integrity.gaps`) says what is wrong; the policy here says what to do about it:

    NONE                nothing is wrong
    VERIFY_ONLY         nothing to fetch or drop (a candle in flight, disorder the store already
                        sorted): re-scan after a grace, resolve if clean
    TARGETED_REPAIR     drop impossible/misaligned rows, backfill holes and untrusted candles
    CONNECTOR_RECOVERY  the live feed is stale: reconnect it (the provider's callback), then repair
    ESCALATE            structural damage too deep to patch blindly, no history source, or the
                        attempts per window are used up: an operator's turn

The `Healer` executes a plan against a `MarketStore` with any history source that has the
connector's `fetch_candles`, and an incident is resolved only when a verify scan passes. Every
step is an event through `emit`: `market.gap`, `provider.incident.opened`, `market.repaired`,
then `provider.incident.resolved` or `provider.incident.escalated`. Every outcome says why it
ended as it did in a typed `Cause`, so callers branch on and render fields, never the text of a
message (a source that cannot be started: `integrity.backfill`). Backfilled candles are checked
against the stored candles on either side first: a source that disagrees (a different synthetic
seed, another venue) is refused rather than mixed in. Over 400 lines because the executor, the
plan and the policy share their types and every branch ends in an event; split, each half would
re-import the other.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from barfinex_cli.contracts.ids import uuid7
from barfinex_cli.contracts.market import (
    GapDetected,
    GapKind,
    GapRepaired,
    IncidentEscalated,
    IncidentOpened,
    IncidentResolved,
    Timeframe,
)
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError, ServiceUnreachable, TransientError, UsageError
from barfinex_cli.market.calendars import calendar_for
from barfinex_cli.market.candles import CandleAggregator, HistorySource, timeframe_ms
from barfinex_cli.market.integrity.gaps import (
    STRUCTURAL,
    ScanConfig,
    ScanReport,
    Severity,
    scan_store,
)
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

Emit = Callable[[Payload], Awaitable[None]]
"""Where the healer sends the events it makes (the provider or the CLI wraps and publishes)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVENT_KIND: dict[str, GapKind] = {
    "hole": "hole", "duplicate": "duplicate", "out_of_order": "out_of_order", "seam": "seam",
    "stale": "stale", "lagging": "lagging", "bad_ohlc": "bad_ohlc", "misaligned": "misaligned",
    "outage": "outage",
}  # fmt: skip
"""Defect kinds as the `GapKind` of the `market.gap` and `market.repaired` events."""


class Action(StrEnum):
    """What the policy decided for a series (the values of `IncidentAction`)."""

    NONE = "NONE"
    VERIFY_ONLY = "VERIFY_ONLY"
    TARGETED_REPAIR = "TARGETED_REPAIR"
    CONNECTOR_RECOVERY = "CONNECTOR_RECOVERY"
    ESCALATE = "ESCALATE"


class Cause(StrEnum):
    """Why a heal ended as it did: what a caller branches on, without reading `reason`."""

    CLEAN = "clean"
    """Nothing was wrong (action NONE)."""
    VERIFIED = "verified"
    """Repaired or re-checked, and a verify scan passed."""
    STRUCTURAL = "structural"
    """Structural damage too deep to patch blindly: escalated by the policy."""
    NO_SOURCE = "no_source"
    """A backfill was needed and there is no history source."""
    SOURCE_DISAGREES = "source_disagrees"
    """The source's candles differ from the stored neighbours: nothing was written."""
    SOURCE_EMPTY = "source_empty"
    """The source holds no candles for a range to backfill."""
    SOURCE_FAILED = "source_failed"
    """The source raised an error another attempt cannot fix."""
    ATTEMPTS_USED_UP = "attempts_used_up"
    """The repair attempts per window were used up without a passing verify."""


class HealingPolicy(BaseModel):
    """Thresholds of the self-healing policy; the defaults suit a 1m crypto feed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    escalate_below: float = Field(
        25.0, ge=0, le=100, description="score under which structural damage escalates"
    )
    resolve_min_score: float = Field(
        95.0, ge=0, le=100, description="a verify scan must reach this"
    )
    verify_only_max_lag: int = Field(
        1, ge=0, description="candles late that only warrant a re-check"
    )
    max_attempts: int = Field(3, ge=1, description="repair attempts per series and window")
    window_s: float = Field(3600.0, gt=0, description="the attempts window")
    verify_delay_s: float = Field(15.0, ge=0, description="wait before a VERIFY_ONLY re-scan")
    retry_delay_s: float = Field(
        1.0, ge=0, description="first wait after a transient failure, doubled"
    )
    context_tolerance: float = Field(1e-9, ge=0, description="relative OHLC gap a source may show")


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """What a repair would do: the decision, rows to drop, open-time ranges to backfill."""

    key: SeriesKey
    action: Action
    reason: str
    drop: tuple[int, ...] = ()
    backfill: tuple[tuple[int, int], ...] = ()
    score: float = 100.0

    @property
    def candles_to_fetch(self) -> int:
        """Return how many candles the backfill ranges span."""
        step = timeframe_ms(self.key.timeframe)
        return sum((end - start) // step + 1 for start, end in self.backfill)

    def to_dict(self) -> dict[str, Any]:
        """Return plain data for `--json`."""
        return {
            "exchange": self.key.exchange, "symbol": self.key.symbol,
            "timeframe": self.key.timeframe, "action": self.action.value, "reason": self.reason,
            "score": self.score, "drop": list(self.drop),
            "backfill": [list(r) for r in self.backfill], "candles_to_fetch": self.candles_to_fetch,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class HealOutcome:
    """How a heal ended, with the scans before and after, and why (`cause`, and in words)."""

    key: SeriesKey
    action: Action
    resolved: bool
    escalated: bool
    attempts: int
    before: ScanReport
    after: ScanReport | None = None
    backfilled: int = 0
    dropped: int = 0
    incident_id: str | None = None
    reason: str = ""
    cause: Cause = Cause.CLEAN

    def to_dict(self) -> dict[str, Any]:
        """Return plain data for `--json`."""
        return {
            "action": self.action.value, "resolved": self.resolved, "escalated": self.escalated,
            "attempts": self.attempts, "backfilled": self.backfilled, "dropped": self.dropped,
            "score_before": self.before.score,
            "score_after": self.after.score if self.after else None,
            "incident_id": self.incident_id, "reason": self.reason, "cause": self.cause.value,
        }  # fmt: skip


class _Permanent(Exception):
    """A failure that another attempt cannot fix (the source disagrees or holds nothing)."""

    def __init__(self, message: str, cause: Cause) -> None:
        super().__init__(message)
        self.cause = cause


def decide(
    report: ScanReport, policy: HealingPolicy | None = None, *, can_reconnect: bool = False
) -> tuple[Action, str]:
    """Return the action for a scanned series and why (the policy table in docs/integrity.md)."""
    policy = policy or HealingPolicy()
    if not report.defects:
        return Action.NONE, "no defects"
    if all(d.kind == "outage" for d in report.defects):
        return Action.NONE, "suspected exchange outage(s): the exchange has nothing better to fetch"
    lag = report.count("stale", "lagging")
    structural = sorted({d.kind for d in report.defects if d.kind in STRUCTURAL})
    if report.score < policy.escalate_below and structural:
        return Action.ESCALATE, (
            f"score {report.score:g} with {', '.join(structural)}: the feed itself is broken and "
            "patching would hide it"
        )
    if lag > policy.verify_only_max_lag and can_reconnect:
        return Action.CONNECTOR_RECOVERY, f"live feed {lag} candle(s) behind: reconnect, backfill"
    if not report.drop and not _ranges(report):
        return Action.VERIFY_ONLY, "nothing to fetch or drop: re-check the held series"
    if (
        lag
        and lag <= policy.verify_only_max_lag
        and all(d.kind == "lagging" for d in report.defects)
    ):
        return Action.VERIFY_ONLY, f"{lag} candle(s) late, within grace: re-check"
    kinds = ", ".join(sorted({d.kind for d in report.defects}))
    return Action.TARGETED_REPAIR, f"{kinds}: score {report.score:g}"


def plan(
    report: ScanReport, policy: HealingPolicy | None = None, *, can_reconnect: bool = False
) -> RepairPlan:
    """Return what a repair of `report` would do, without doing it (`--dry-run`)."""
    action, reason = decide(report, policy, can_reconnect=can_reconnect)
    return _plan_for(report, action, reason)


def _plan_for(report: ScanReport, action: Action, reason: str) -> RepairPlan:
    repairs = action in (Action.TARGETED_REPAIR, Action.CONNECTOR_RECOVERY)
    return RepairPlan(
        key=report.key,
        action=action,
        reason=reason,
        drop=report.drop if repairs else (),
        backfill=_ranges(report) if repairs else (),
        score=report.score,
    )


def _ranges(report: ScanReport) -> tuple[tuple[int, int], ...]:
    step = timeframe_ms(report.key.timeframe)
    ranges = sorted([*report.missing_ranges, *((ms, ms) for ms in report.refetch)])
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1] + step:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass
class Healer:
    """Repairs series in a store from a history source, verifies, and reports every step.

    Args:
        store: Where the series live.
        source: The history source (None: anything needing a backfill escalates).
        emit: Where the gap, repair and incident payloads go.
        policy: Thresholds of the policy.
        scan_config: Thresholds of the scans.
        reconnect: Reconnects the live feed of a series (CONNECTOR_RECOVERY).
        clock: Wall clock in seconds; freshness and the attempts window use it.
        source_kind: What `GapRepaired.source` says the backfill came from.
        calendars: `[calendars]` patterns (`exchange:symbol` glob -> calendar): the scan of a
            series uses the calendar its key matches, else `scan_config.calendar`.
    """

    store: MarketStore
    source: HistorySource | None
    emit: Emit
    policy: HealingPolicy = field(default_factory=HealingPolicy)
    scan_config: ScanConfig = field(default_factory=ScanConfig)
    reconnect: Callable[[SeriesKey], Awaitable[None]] | None = None
    clock: Callable[[], float] = time.time
    source_kind: Literal["rest", "archive", "stream"] = "rest"
    calendars: Mapping[str, str] = field(default_factory=dict)
    _attempts: dict[SeriesKey, list[float]] = field(default_factory=dict, init=False, repr=False)

    def scan(
        self,
        key: SeriesKey,
        since_ms: int | None = None,
        until_ms: int | None = None,
        live: Sequence[CandleRow] = (),
        fresh: bool = False,
    ) -> ScanReport:
        """Scan the stored series (against the clock when `fresh`)."""
        now = int(self.clock() * 1000) if fresh else None
        config = self.scan_config
        if self.calendars:
            calendar = calendar_for(key.exchange, key.symbol, self.calendars)
            config = config.model_copy(update={"calendar": calendar})
        return scan_store(
            self.store, key, since_ms=since_ms, until_ms=until_ms, now_ms=now, live=live,
            config=config,
        )  # fmt: skip

    async def heal(
        self,
        key: SeriesKey,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        live: Sequence[CandleRow] = (),
        fresh: bool = False,
    ) -> HealOutcome:
        """Scan one series and, if the policy says so, repair and verify it.

        Args:
            key: The series.
            since_ms: Start of the range to hold (holes before the first row count).
            until_ms: End of the range (open times).
            live: Rows received from the live stream after the stored history (the seam).
            fresh: Judge freshness against the clock (a live series).
        """
        before = self.scan(key, since_ms, until_ms, live, fresh)
        action, reason = decide(before, self.policy, can_reconnect=self.reconnect is not None)
        if action is Action.NONE:
            return HealOutcome(
                key, action, True, False, 0, before, before, reason=reason, cause=Cause.CLEAN
            )
        incident = uuid7()
        opened = datetime.now(UTC)
        for defect in before.defects:
            kind = _EVENT_KIND.get(defect.kind)
            if kind is not None:
                missing = _missing_in(before, defect.start_ms, defect.end_ms)
                start, end = _utc(defect.start_ms), _utc(defect.end_ms)
                gap = GapDetected(**_series(key), start=start, end=end, missing=missing, kind=kind)
                await self.emit(gap)
        base = {"incident_id": incident, **_series(key), "action": action.value}
        await self.emit(
            IncidentOpened(**base, quality_score=before.score, reason=reason, opened_at=opened)
        )
        if action is Action.ESCALATE:
            return await self._escalate(base, before, 0, reason, Cause.STRUCTURAL)

        backfilled = dropped = attempt = 0
        report, why, delay = before, reason, self.policy.retry_delay_s
        while True:
            used = self._used(key)
            if used >= self.policy.max_attempts:
                why = f"{used} attempt(s) in {self.policy.window_s:g}s did not heal it; last: {why}"
                return await self._escalate(
                    base, report, attempt, why, Cause.ATTEMPTS_USED_UP, backfilled, dropped
                )
            if action is not Action.VERIFY_ONLY and self.source is None and _ranges(report):
                why = f"no history source for {key.exchange} to backfill from"
                return await self._escalate(
                    base, report, attempt, why, Cause.NO_SOURCE, backfilled, dropped
                )
            self._attempts.setdefault(key, []).append(self.clock())
            attempt += 1
            try:
                if action is Action.CONNECTOR_RECOVERY and self.reconnect is not None:
                    await self.reconnect(key)
                if action is Action.VERIFY_ONLY:
                    await asyncio.sleep(self.policy.verify_delay_s)
                else:
                    got, gone = await self._execute(key, _plan_for(report, action, why), report)
                    backfilled, dropped = backfilled + got, dropped + gone
            except (TransientError, ServiceUnreachable, OSError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(delay)
                delay *= 2
                continue
            except (_Permanent, BfxError) as exc:
                cause = exc.cause if isinstance(exc, _Permanent) else Cause.SOURCE_FAILED
                return await self._escalate(
                    base, report, attempt, str(exc), cause, backfilled, dropped
                )
            after = self.scan(key, since_ms, until_ms, live, fresh)
            failing = _verify_failure(after, self.policy, waited=action is Action.VERIFY_ONLY)
            if failing is None:
                done = datetime.now(UTC)
                note = (
                    f"backfilled {backfilled}, dropped {dropped}; "
                    f"score {before.score:g} -> {after.score:g}"
                )
                took = (done - opened).total_seconds()
                await self.emit(
                    IncidentResolved(**base, quality_score=after.score, reason=note,
                                     resolved_at=done, duration_s=took)
                )  # fmt: skip
                return HealOutcome(
                    key, action, True, False, attempt, before, after, backfilled, dropped,
                    incident, note, Cause.VERIFIED,
                )  # fmt: skip
            report, why = after, failing
            if action is Action.VERIFY_ONLY:
                action = Action.TARGETED_REPAIR  # the late candle did not come: fetch it
                base["action"] = action.value

    async def _execute(
        self, key: SeriesKey, todo: RepairPlan, report: ScanReport
    ) -> tuple[int, int]:
        """Drop, backfill and emit a `market.repaired` per fixed defect; return (rows, dropped)."""
        started = time.monotonic()
        dropped = self.store.delete_candles(key, todo.drop) if todo.drop else 0
        step = timeframe_ms(key.timeframe)
        written = 0
        per_range: list[tuple[int, int, int]] = []
        for start, end in todo.backfill:
            rows = await self._fetch(key, start, end)
            written += self.store.upsert_candles(key, rows)
            per_range.append((start, end, len(rows)))
        elapsed = (time.monotonic() - started) * 1000
        for defect in report.defects:
            kind = _EVENT_KIND.get(defect.kind)
            rows_in = sum(n for s, e, n in per_range if s <= defect.end_ms and e >= defect.start_ms)
            gone = sum(1 for ms in todo.drop if defect.start_ms <= ms <= defect.end_ms + step - 1)
            if kind is None or not (rows_in or gone):
                continue
            first, last = _utc(defect.start_ms), _utc(defect.end_ms)
            await self.emit(
                GapRepaired(**_series(key), start=first, end=last, kind=kind, backfilled=rows_in,
                            dropped=gone, source=self.source_kind, duration_ms=elapsed)
            )  # fmt: skip
        return written, dropped

    async def _fetch(self, key: SeriesKey, start: int, end: int) -> list[CandleRow]:
        """Fetch [start, end] with one candle of context each side, checked against the store."""
        assert self.source is not None
        step = timeframe_ms(key.timeframe)
        fetched = await self._pages(key.symbol, key.timeframe, start - step, end + step)
        by_open = {r.open_ms: r for r in fetched if (r.open_ms - start) % step == 0}
        for ms in (start - step, end + step):
            held = self.store.candles(key, since_ms=ms, until_ms=ms)
            if (
                held
                and ms in by_open
                and not _same(held[0], by_open[ms], self.policy.context_tolerance)
            ):
                when = f"{_utc(ms):%Y-%m-%d %H:%M}Z"
                raise _Permanent(
                    f"the history source disagrees with the stored candle at {when} (stored "
                    f"close {held[0].close}, source close {by_open[ms].close}): another market "
                    "or seed? nothing was written",
                    Cause.SOURCE_DISAGREES,
                )
        rows = [r for ms, r in sorted(by_open.items()) if start <= ms <= end]
        if not rows:
            raise _Permanent(
                f"the history source has no candles for {_utc(start):%Y-%m-%d %H:%M}Z.."
                f"{_utc(end):%Y-%m-%d %H:%M}Z either (an outage, or no trades): nothing to "
                "backfill",
                Cause.SOURCE_EMPTY,
            )
        return rows

    async def _pages(self, symbol: str, timeframe: str, since: int, until: int) -> list[CandleRow]:
        assert self.source is not None
        step = timeframe_ms(timeframe)
        try:
            rows: list[CandleRow] = []
            cursor = since
            while cursor <= until:
                page = await self.source.fetch_candles(symbol, timeframe, cursor, until)
                page = [r for r in page if cursor <= r.open_ms <= until]
                if not page:
                    break
                rows.extend(page)
                cursor = max(r.open_ms for r in page) + step
            return rows
        except UsageError:
            if timeframe == "1m":
                raise
        # The source serves only 1m (a replay): build the timeframe from it as the feed would.
        agg = CandleAggregator(("1m", timeframe))
        built: list[CandleRow] = []
        for row in await self._pages(symbol, "1m", since, until + step - 1):
            built += [r for tf, r in agg.add_candle("1m", row) if tf == timeframe]
        return built + [r for tf, r in agg.flush_until(until + step) if tf == timeframe]

    def _used(self, key: SeriesKey) -> int:
        horizon = self.clock() - self.policy.window_s
        recent = [t for t in self._attempts.get(key, []) if t > horizon]
        self._attempts[key] = recent
        return len(recent)

    async def _escalate(
        self,
        base: dict[str, Any],
        report: ScanReport,
        attempts: int,
        reason: str,
        cause: Cause,
        backfilled: int = 0,
        dropped: int = 0,
    ) -> HealOutcome:
        fields = {**base, "action": Action.ESCALATE.value}
        now = datetime.now(UTC)
        await self.emit(
            IncidentEscalated(**fields, quality_score=report.score, reason=reason,
                              attempts=attempts, escalated_at=now)
        )  # fmt: skip
        return HealOutcome(
            report.key, Action.ESCALATE, False, True, attempts, report, None, backfilled,
            dropped, base["incident_id"], reason, cause,
        )  # fmt: skip


def _missing_in(report: ScanReport, start: int, end: int) -> int:
    step = timeframe_ms(report.key.timeframe)
    spans = ((max(a, start), min(b, end)) for a, b in report.missing_ranges)
    return sum((b - a) // step + 1 for a, b in spans if a <= b)


def _verify_failure(after: ScanReport, policy: HealingPolicy, *, waited: bool) -> str | None:
    """Return why a verify scan fails: critical, holes, stale, low score, or late after a wait."""
    lagging = waited and after.has("lagging")
    critical = after.severity is Severity.CRITICAL
    if critical or lagging or after.has("hole", "stale") or after.score < policy.resolve_min_score:
        left = "; ".join(d.detail for d in after.defects[:3]) or "no defects"
        return f"verify failed: score {after.score:g}, {left}"
    return None


def _same(a: CandleRow, b: CandleRow, tolerance: float) -> bool:
    pairs = ((a.open, b.open), (a.high, b.high), (a.low, b.low), (a.close, b.close))
    return all(math.isclose(x, y, rel_tol=tolerance, abs_tol=0.0) for x, y in pairs)


def _series(key: SeriesKey) -> dict[str, Any]:
    tf: Timeframe = key.timeframe  # type: ignore[assignment]  # validated by the payload model
    return {"exchange": key.exchange, "symbol": key.symbol, "timeframe": tf}


def _utc(ms: int) -> datetime:
    return from_ms(ms)
