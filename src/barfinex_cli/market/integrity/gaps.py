"""Integrity scans of candle series: what is missing, repeated, disordered or broken, and a score.

A keyed store hides most faults: a repeated candle overwrites the first, a late one lands in its
place. So the scan reads rows *as they arrived* (an import, a stream buffer) as well as what the
store holds, and reports, per series (exchange, symbol, timeframe):

- holes against the UTC grid of the timeframe, including before the first and after the last row
  of a requested range;
- duplicates (identical or conflicting), out-of-order arrivals, misaligned open times and
  impossible candles (`bad_ohlc`: high below open/close/low, non-positive prices, negative volume);
- the seam where stored history meets the live stream: no hole touching the last stored candle,
  one version of the candle at the seam, and the first live open within a tolerance of the last
  stored close;
- freshness against a clock: a live series one or two candles behind is lagging, more is stale;
- closures are not holes: a trading calendar (`market.calendars`, `ScanConfig.calendar`) says
  which candles are expected at all (FX weekends, stock holidays);
- runs of flat zero-volume candles inside a 24/7 series (an exchange filling its own outage) are
  reported as suspected outages with their length, and cost score like holes.

Structural defects (duplicates, out-of-order, misaligned, bad_ohlc, seam) are CRITICAL;
operational ones (holes, stale, lagging) WARN. The 0-100 score subtracts a capped penalty per kind
(see `ScanConfig` and docs/integrity.md).

Rows are checked in one Python pass (`_walk`); the store is checked in SQL (`_query`, a million
candles in about a second) and both feed the same report builder, which a property test holds
equal. About 500 lines: the two passes, the seam, the holes and the score share private types;
split in two, each half would import the other's internals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from barfinex_cli.market.calendars import CalendarName, clip, count_expected
from barfinex_cli.market.candles import grid_offset, timeframe_ms
from barfinex_cli.store.market import CandleRow, SeriesKey

if TYPE_CHECKING:
    from barfinex_cli.store.market import MarketStore

DefectKind = Literal[
    "hole",
    "duplicate",
    "out_of_order",
    "misaligned",
    "bad_ohlc",
    "seam",
    "stale",
    "lagging",
    "outage",
]
STRUCTURAL: frozenset[str] = frozenset(
    {"duplicate", "out_of_order", "misaligned", "bad_ohlc", "seam"}
)


class Severity(StrEnum):
    """How bad a defect (or the worst defect of a series) is."""

    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Return 0, 1 or 2, for comparing severities."""
        return ("ok", "warn", "critical").index(self.value)


class ScanConfig(BaseModel):
    """Thresholds and score penalties of a scan; every penalty is capped per kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seam_tolerance_pct: float = Field(
        1.0, gt=0, description="max jump, last stored close -> first live open"
    )
    grace_ms: int = Field(15_000, ge=0, description="time a closed candle may take to arrive")
    stale_after: int = Field(
        3, ge=2, description="candles behind the clock that make a series stale"
    )
    hole_per_pct: float = Field(5.0, ge=0, description="penalty per 1% of expected candles missing")
    hole_per_range: float = Field(1.0, ge=0, description="penalty per separate hole")
    hole_cap: float = Field(60.0, ge=0)
    structural_per_row: float = Field(5.0, ge=0, description="per duplicate/disordered/bad row")
    structural_cap: float = Field(30.0, ge=0, description="cap for each structural kind")
    seam_per_defect: float = Field(20.0, ge=0)
    seam_cap: float = Field(40.0, ge=0)
    stale_penalty: float = Field(40.0, ge=0)
    lagging_per_candle: float = Field(5.0, ge=0)
    lagging_cap: float = Field(15.0, ge=0)
    calendar: CalendarName = Field("24/7", description="when the market trades (closures)")
    outage_min_candles: int = Field(
        3, ge=1, description="flat zero-volume candles in a row that make a suspected outage"
    )
    outage_per_pct: float = Field(5.0, ge=0, description="penalty per 1% of candles in outages")
    outage_cap: float = Field(40.0, ge=0)


@dataclass(frozen=True, slots=True)
class Defect:
    """One flaw: `start_ms`/`end_ms` are the open times of the first and last candle it touches."""

    kind: DefectKind
    severity: Severity
    start_ms: int
    end_ms: int
    count: int
    detail: str


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What a scan found in one series, with what a repair has to do about it."""

    key: SeriesKey
    rows: int
    expected: int
    first_ms: int | None
    last_ms: int | None
    defects: tuple[Defect, ...]
    score: float
    missing_ranges: tuple[tuple[int, int], ...]
    """Inclusive open-time ranges to backfill."""
    drop: tuple[int, ...] = ()
    """Open times of rows to delete: misaligned or impossible."""
    refetch: tuple[int, ...] = ()
    """Open times whose held value cannot be trusted: conflicts, impossible rows, seam faults."""
    since_ms: int | None = None
    until_ms: int | None = None
    penalties: dict[str, float] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        """Return the worst severity among the defects (OK when there are none)."""
        return max((d.severity for d in self.defects), key=lambda s: s.rank, default=Severity.OK)

    def count(self, *kinds: str) -> int:
        """Return the summed `count` of defects of the given kinds."""
        return sum(d.count for d in self.defects if d.kind in kinds)

    def has(self, *kinds: str) -> bool:
        """Return whether any defect is of one of the given kinds."""
        return any(d.kind in kinds for d in self.defects)

    def to_dict(self) -> dict[str, Any]:
        """Return plain data for `--json`."""
        return {
            "exchange": self.key.exchange,
            "symbol": self.key.symbol,
            "timeframe": self.key.timeframe,
            "rows": self.rows,
            "expected": self.expected,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "holes": sum(1 for d in self.defects if d.kind == "hole"),
            "missing": self.count("hole", "seam", "stale", "lagging"),
            "duplicates": self.count("duplicate"),
            "score": self.score,
            "severity": self.severity.value,
            "penalties": self.penalties,
            "missing_ranges": [list(r) for r in self.missing_ranges],
            "drop": list(self.drop),
            "refetch": list(self.refetch),
            "defects": [
                {"kind": d.kind, "severity": d.severity.value, "start_ms": d.start_ms,
                 "end_ms": d.end_ms, "count": d.count, "detail": d.detail}
                for d in self.defects
            ],
        }  # fmt: skip


def _defect(kind: DefectKind, start: int, end: int, count: int, detail: str) -> Defect:
    severity = Severity.CRITICAL if kind in STRUCTURAL else Severity.WARN
    return Defect(kind, severity, start, end, count, detail)


@dataclass
class _Found:
    """What one pass found: aligned open times as contiguous runs, and the faulty rows."""

    count: int = 0
    runs: list[tuple[int, int]] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    conflicts: set[int] = field(default_factory=set)
    disordered: list[int] = field(default_factory=list)
    misaligned: list[int] = field(default_factory=list)
    bad: list[int] = field(default_factory=list)
    flat: list[int] = field(default_factory=list)
    """Open times of flat zero-volume candles (open = high = low = close, volume 0)."""

    def defects(self, step: int, where: str) -> list[Defect]:
        checks: tuple[tuple[DefectKind, list[int], str], ...] = (
            ("duplicate", self.extra, f"repeated row(s) in {where}"),
            ("out_of_order", self.disordered, f"row(s) in {where} arrived after a later candle"),
            ("misaligned", self.misaligned, f"row(s) in {where} open off the candle grid"),
            ("bad_ohlc", self.bad, f"impossible candle(s) in {where}"),
        )
        found = []
        for kind, opens, text in checks:
            for start, end, n in _runs(opens, step):
                clash = sum(1 for ms in self.conflicts if start <= ms <= end)
                note = f", {clash} with conflicting values" if kind == "duplicate" and clash else ""
                found.append(_defect(kind, start, end, n, f"{n} {text}{note}"))
        return found


_INF = math.inf
_SANE_SQL = (
    "low > 0 AND low <= open AND open <= high AND low <= close AND close <= high "
    "AND volume >= 0 AND volume < 9e999 AND high < 9e999"
)
"""`_sane` in SQL (9e999 is infinity); NaN cannot be stored, and fails every comparison anyway."""


def _sane(r: CandleRow) -> bool:
    """Return whether a candle is possible: positive, finite, low <= open/close <= high."""
    ordered = 0 < r.low <= r.open <= r.high and r.low <= r.close <= r.high
    return ordered and 0 <= r.volume < _INF and r.high < _INF  # NaN fails every comparison


def _walk(rows: Iterable[CandleRow], step: int, offset: int) -> tuple[_Found, dict[int, CandleRow]]:
    """Check rows in arrival order; return what was found and the first row per open time."""
    found, first = _Found(), dict[int, CandleRow]()
    newest = -(2**62)
    for row in rows:
        found.count += 1
        ms = row.open_ms
        if (ms - offset) % step:
            found.misaligned.append(ms)
            continue
        if not _sane(row):
            found.bad.append(ms)
        elif row.volume == 0 and row.open == row.high == row.low == row.close:
            found.flat.append(ms)
        seen = first.get(ms)
        if seen is not None:
            found.extra.append(ms)
            if row != seen:
                found.conflicts.add(ms)
            continue
        first[ms] = row
        if ms < newest:
            found.disordered.append(ms)
        else:
            newest = ms
    found.runs = _merge(((ms, ms) for ms in sorted(first)), step)
    return found, first


def _query(store: MarketStore, key: SeriesKey, since: int | None, until: int | None) -> _Found:
    """Find in SQL what `_walk` finds, without loading the rows: the store holds one sorted copy."""
    step, offset = timeframe_ms(key.timeframe), grid_offset(key.timeframe)
    where, params = "exchange=? AND symbol=? AND timeframe=?", list[object](key)
    if since is not None:
        where, params = where + " AND open_ms >= ?", [*params, since]
    if until is not None:
        where, params = where + " AND open_ms <= ?", [*params, until]
    aligned = f"({where}) AND (open_ms - {offset}) % {step} = 0"
    run = store.conn.execute
    found = _Found(count=run(f"SELECT count(*) FROM candles WHERE {where}", params).fetchone()[0])
    sql = f"SELECT open_ms FROM candles WHERE ({where}) AND (open_ms - {offset}) % {step} != 0"
    found.misaligned = [ms for (ms,) in run(sql, params)]
    sql = f"SELECT open_ms FROM candles WHERE {aligned} AND NOT ({_SANE_SQL}) ORDER BY open_ms"
    found.bad = [ms for (ms,) in run(sql, params)]
    sql = (
        f"SELECT open_ms FROM candles WHERE {aligned} AND ({_SANE_SQL}) AND volume = 0 "
        "AND open = high AND high = low AND low = close ORDER BY open_ms"
    )
    found.flat = [ms for (ms,) in run(sql, params)]
    # Runs from the open times alone: a Python walk over one integer column beats lag() in SQLite.
    opens = [ms for (ms,) in run(f"SELECT open_ms FROM candles WHERE {aligned}", params)]
    if not opens:
        return found
    breaks = [i for i in range(1, len(opens)) if opens[i] - opens[i - 1] > step]
    edges = [opens[0], *(ms for i in breaks for ms in (opens[i - 1], opens[i])), opens[-1]]
    found.runs = list(zip(edges[::2], edges[1::2], strict=True))
    return found


def _runs(opens: Iterable[int], step: int) -> list[tuple[int, int, int]]:
    """Group open times (with repeats) into runs of adjacent candles: (first, last, rows)."""
    runs: list[tuple[int, int, int]] = []
    for ms in sorted(opens):
        if runs and ms - runs[-1][1] <= step:
            start, _, n = runs[-1]
            runs[-1] = (start, ms, n + 1)
        else:
            runs.append((ms, ms, 1))
    return runs


def scan_rows(
    key: SeriesKey,
    rows: Sequence[CandleRow],
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    now_ms: int | None = None,
    config: ScanConfig | None = None,
) -> ScanReport:
    """Scan one sequence of rows as it arrived (an import, a buffer, or the store's rows)."""
    return scan_series(
        key, rows, since_ms=since_ms, until_ms=until_ms, now_ms=now_ms, config=config
    )


def scan_store(
    store: MarketStore,
    key: SeriesKey,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    now_ms: int | None = None,
    live: Sequence[CandleRow] = (),
    config: ScanConfig | None = None,
) -> ScanReport:
    """Scan what the store holds of a series in [since, until] (in SQL), and its seam with `live`.

    Gives the same report as `scan_series` over the stored rows, without loading them.
    """
    step, offset = timeframe_ms(key.timeframe), grid_offset(key.timeframe)
    hist = _query(store, key, since_ms, until_ms)
    stream, streamed = _walk(live, step, offset)
    held: dict[int, CandleRow] = {}
    if hist.runs and streamed:
        last = hist.runs[-1][1]  # only the rows the live ones overlap are needed
        low = min(min(streamed), last)
        low = low if since_ms is None else max(low, since_ms)
        held = {r.open_ms: r for r in store.candles(key, since_ms=low, until_ms=last)}
    return _report(key, hist, held, stream, streamed, live, since_ms, until_ms, now_ms, config)


def scan_series(
    key: SeriesKey,
    history: Sequence[CandleRow],
    live: Sequence[CandleRow] = (),
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    now_ms: int | None = None,
    config: ScanConfig | None = None,
) -> ScanReport:
    """Scan stored or imported `history`, then the `live` rows that followed it from a stream.

    Args:
        key: The series; its timeframe sets the grid.
        history: Rows in the order they arrived (a store returns them sorted and unique).
        live: Rows from the live stream, in arrival order; checked against the seam.
        since_ms: Start of the requested range: holes before the first row are reported.
        until_ms: End of the requested range (open times): holes after the last row are reported.
        now_ms: The clock; when given, freshness is judged and the tail counts as lag, not holes.
        config: Thresholds and penalties.
    """
    step, offset = timeframe_ms(key.timeframe), grid_offset(key.timeframe)
    hist, held = _walk(history, step, offset)
    stream, streamed = _walk(live, step, offset)
    return _report(key, hist, held, stream, streamed, live, since_ms, until_ms, now_ms, config)


def _report(
    key: SeriesKey,
    hist: _Found,
    held: dict[int, CandleRow],
    stream: _Found,
    streamed: dict[int, CandleRow],
    live: Sequence[CandleRow],
    since_ms: int | None,
    until_ms: int | None,
    now_ms: int | None,
    config: ScanConfig | None,
) -> ScanReport:
    cfg = config or ScanConfig()
    step, offset = timeframe_ms(key.timeframe), grid_offset(key.timeframe)
    defects = hist.defects(step, "history") + stream.defects(step, "live")
    drop = {*hist.misaligned, *hist.bad, *stream.misaligned, *stream.bad}
    refetch = {*hist.conflicts, *hist.bad, *stream.conflicts, *stream.bad}
    missing: list[tuple[int, int]] = []

    seam_gap: tuple[int, int] | None = None
    if hist.runs and streamed:
        seam, seam_gap, seam_refetch = _seam(held, hist.runs[-1][1], streamed, live, step, cfg)
        defects += seam
        refetch |= seam_refetch
        if seam_gap is not None:
            missing.append(seam_gap)

    runs = _merge([*hist.runs, *stream.runs], step)
    first, last = (runs[0][0], runs[-1][1]) if runs else (None, None)
    lo = _align_up(since_ms, step, offset) if since_ms is not None else first
    latest = None  # open time of the newest candle that should have closed and arrived by now
    if now_ms is not None:
        latest = _align_down(now_ms - cfg.grace_ms - step, step, offset)
    hi: int | None
    if until_ms is not None:
        hi = _align_down(until_ms, step, offset)
        hi = hi if latest is None else min(hi, latest)
    else:
        hi = latest if latest is not None else last
    # A range that reaches the present ends in lag (the feed is behind), not in a hole.
    live_tail = latest is not None and hi == latest and last is not None and last < hi
    hole_hi = last if live_tail else hi

    expected = 0
    if lo is not None and hi is not None and hi >= lo:
        expected = count_expected(cfg.calendar, lo, hi, step, offset)
    if lo is not None and hole_hi is not None:
        for start, end, where in _holes(runs, lo, hole_hi, step):
            if seam_gap is not None and seam_gap[0] <= start and end <= seam_gap[1]:
                continue
            for first_open, last_open in clip([(start, end)], cfg.calendar, step, offset):
                n = (last_open - first_open) // step + 1
                text = f"{n} candle(s) missing {where}"
                defects.append(_defect("hole", first_open, last_open, n, text))
                missing.append((first_open, last_open))

    if cfg.calendar == "24/7":
        for start, end, n in _runs([*hist.flat, *stream.flat], step):
            if n >= cfg.outage_min_candles:
                text = f"{n} flat zero-volume candle(s) in a row: a suspected exchange outage"
                defects.append(_defect("outage", start, end, n, text))

    if live_tail and hi is not None and last is not None:
        behind = (hi - last) // step
        kind: DefectKind = "stale" if behind >= cfg.stale_after else "lagging"
        detail = f"{behind} closed candle(s) not received; the feed is behind the clock"
        defects.append(_defect(kind, last + step, hi, behind, detail))
        missing.append((last + step, hi))

    penalties = _penalties(defects, expected, cfg)
    return ScanReport(
        key=key,
        rows=hist.count + stream.count,
        expected=expected,
        first_ms=first,
        last_ms=last,
        defects=tuple(sorted(defects, key=lambda d: (d.start_ms, d.kind))),
        score=round(max(0.0, 100.0 - sum(penalties.values())), 2),
        missing_ranges=tuple(_merge(missing, step)),
        drop=tuple(sorted(drop)),
        refetch=tuple(sorted(refetch)),
        since_ms=lo,
        until_ms=hi,
        penalties=penalties,
    )


def _seam(
    held: dict[int, CandleRow],
    last: int,
    streamed: dict[int, CandleRow],
    live: Sequence[CandleRow],
    step: int,
    cfg: ScanConfig,
) -> tuple[list[Defect], tuple[int, int] | None, set[int]]:
    defects: list[Defect] = []
    conflicts = {ms for ms, row in streamed.items() if ms in held and held[ms] != row}
    if conflicts:
        text = f"{len(conflicts)} live candle(s) differ from the stored ones"
        defects.append(_defect("seam", min(conflicts), max(conflicts), len(conflicts), text))
    after = [row for row in live if row.open_ms > last]
    gap = None
    if after:
        first = min(after, key=lambda r: r.open_ms)
        if first.open_ms > last + step:
            n = (first.open_ms - last) // step - 1
            gap = (last + step, first.open_ms - step)
            text = f"{n} candle(s) missing between history and the live stream"
            defects.append(_defect("seam", gap[0], gap[1], n, text))
        else:
            close = held[last].close
            jump = abs(first.open - close) / close * 100 if close else math.inf
            if jump > cfg.seam_tolerance_pct:
                text = f"first live open {first.open} is {jump:.2f}% from the last close {close}"
                defects.append(_defect("seam", last, first.open_ms, 1, text))
                conflicts.add(last)
    return defects, gap, conflicts


def _holes(
    runs: Sequence[tuple[int, int]], lo: int, hi: int, step: int
) -> list[tuple[int, int, str]]:
    """Return the open-time ranges in [lo, hi] that no run covers, each with where it lies."""
    inside = [(max(a, lo), min(b, hi)) for a, b in runs if b >= lo and a <= hi]
    if not inside:
        return [(lo, hi, "with no row in the range")] if hi >= lo else []
    holes, prev = [], lo - step
    for a, b in inside:
        if a > prev + step:
            holes.append((prev + step, a - step, "between rows"))
        prev = b
    if hi > prev:
        holes.append((prev + step, hi, "after the last row"))
    if holes and holes[0][0] == lo and lo < inside[0][0]:
        holes[0] = (*holes[0][:2], "before the first row")
    return holes


def _merge(ranges: Iterable[tuple[int, int]], step: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + step:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _penalties(defects: Sequence[Defect], expected: int, cfg: ScanConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    holes = [d for d in defects if d.kind == "hole"]
    if holes:
        missing = sum(d.count for d in holes)
        share = 100.0 * missing / max(expected, missing)
        out["hole"] = min(cfg.hole_cap, cfg.hole_per_range * len(holes) + cfg.hole_per_pct * share)
    for kind in ("duplicate", "out_of_order", "misaligned", "bad_ohlc"):
        rows = sum(d.count for d in defects if d.kind == kind)
        if rows:
            out[kind] = min(cfg.structural_cap, cfg.structural_per_row * rows)
    seams = sum(1 for d in defects if d.kind == "seam")
    if seams:
        out["seam"] = min(cfg.seam_cap, cfg.seam_per_defect * seams)
    outages = sum(d.count for d in defects if d.kind == "outage")
    if outages:
        share = 100.0 * outages / max(expected, outages)
        out["outage"] = min(cfg.outage_cap, cfg.outage_per_pct * share)
    for d in defects:
        if d.kind == "stale":
            out["stale"] = cfg.stale_penalty
        elif d.kind == "lagging":
            out["lagging"] = min(cfg.lagging_cap, cfg.lagging_per_candle * d.count)
    return {k: round(v, 2) for k, v in out.items()}


def _align_up(ms: int, step: int, offset: int) -> int:
    return ms + (-(ms - offset)) % step


def _align_down(ms: int, step: int, offset: int) -> int:
    return ms - (ms - offset) % step
