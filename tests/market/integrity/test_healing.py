"""Self-healing: the policy table, plans, and repairs that verify before they resolve.

History sources here are small classes serving known candles through `fetch_candles`, the one
method the healer uses of an exchange's history endpoint; the synthetic market test uses the real
replay connector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from barfinex_cli.contracts.market import GapDetected, GapRepaired, IncidentEscalated
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import ConfigError, TransientError, UsageError
from barfinex_cli.market.candles import CandleAggregator
from barfinex_cli.market.integrity.gaps import scan_rows, scan_series
from barfinex_cli.market.integrity.healing import (
    Action,
    Cause,
    Healer,
    HealingPolicy,
    decide,
    plan,
)
from barfinex_cli.provider.connectors.sources import history_source_for
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

T0 = 1_704_067_200_000
MIN = 60_000
KEY = SeriesKey("binance", "BTC/USDT", "1m")
FAST = HealingPolicy(retry_delay_s=0.0, verify_delay_s=0.0)


def candle(i: int, step: int = MIN) -> CandleRow:
    price = 100.0 + i
    return CandleRow(T0 + i * step, price, price + 2, price - 1, price + 1, 3.0 + i, 10)


class History:
    """An exchange's history endpoint over known candles, counting calls; may fail on purpose."""

    def __init__(self, rows: Sequence[CandleRow], *, fail: Exception | None = None,
                 timeframe: str = "1m") -> None:  # fmt: skip
        self.rows = list(rows)
        self.fail = fail
        self.timeframe = timeframe
        self.calls = 0

    async def fetch_candles(
        self, symbol: str, timeframe: str, since_ms: int, until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[CandleRow]:  # fmt: skip
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if timeframe != self.timeframe:
            raise UsageError(f"only {self.timeframe} candles here")
        end = until_ms if until_ms is not None else 2**62
        return [r for r in self.rows if since_ms <= r.open_ms <= end][:limit]


class Events:
    def __init__(self) -> None:
        self.seen: list[Payload] = []

    async def __call__(self, payload: Payload) -> None:
        self.seen.append(payload)

    @property
    def types(self) -> list[str]:
        return [p.event_type for p in self.seen]


@pytest.fixture
def store(tmp_path: Path) -> MarketStore:
    return MarketStore(tmp_path / "market.db")


async def test_a_missing_range_is_backfilled_verified_and_resolved(store: MarketStore) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(60) if not 10 <= i <= 14])
    events = Events()
    outcome = await Healer(
        store, History([candle(i) for i in range(60)]), events, policy=FAST
    ).heal(KEY)
    assert events.types == [
        "market.gap",
        "provider.incident.opened",
        "market.repaired",
        "provider.incident.resolved",
    ]
    gap, opened, repaired, resolved = events.seen
    assert isinstance(gap, GapDetected) and gap.missing == 5 and gap.kind == "hole"
    assert isinstance(repaired, GapRepaired) and (repaired.backfilled, repaired.dropped) == (5, 0)
    assert opened.incident_id == resolved.incident_id == outcome.incident_id  # type: ignore[attr-defined]
    assert resolved.quality_score == 100.0  # type: ignore[attr-defined]
    assert (outcome.resolved, outcome.attempts, outcome.backfilled) == (True, 1, 5)
    assert outcome.cause is Cause.VERIFIED
    assert store.candles(KEY) == [candle(i) for i in range(60)]


async def test_a_clean_series_opens_no_incident(store: MarketStore) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(10)])
    events = Events()
    outcome = await Healer(store, None, events, policy=FAST).heal(KEY)
    assert outcome.action is Action.NONE and events.seen == []
    assert outcome.cause is Cause.CLEAN


async def test_a_source_that_keeps_failing_escalates_after_the_attempts_cap(
    store: MarketStore,
) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(10) if i != 4])
    source = History([], fail=TransientError("rate limited"))
    events = Events()
    policy = HealingPolicy(max_attempts=3, retry_delay_s=0.0)
    outcome = await Healer(store, source, events, policy=policy).heal(KEY)
    assert events.types == ["market.gap", "provider.incident.opened", "provider.incident.escalated"]
    escalated = events.seen[-1]
    assert isinstance(escalated, IncidentEscalated) and escalated.attempts == 3
    assert "3 attempt(s)" in escalated.reason and "rate limited" in escalated.reason
    assert (outcome.escalated, source.calls) == (True, 3)
    assert outcome.cause is Cause.ATTEMPTS_USED_UP


async def test_attempts_are_capped_per_window_across_heals(store: MarketStore) -> None:
    now = [1_000.0]
    healer = Healer(store, History([candle(i) for i in range(20)]), Events(),
                    policy=HealingPolicy(max_attempts=2, window_s=600, retry_delay_s=0.0),
                    clock=lambda: now[0])  # fmt: skip
    for _ in range(2):  # a flapping series: broken again after each repair
        store.delete_candles(KEY, [T0 + 5 * MIN])
        store.upsert_candles(KEY, [candle(i) for i in range(20) if i != 5])
        assert (await healer.heal(KEY)).resolved
    store.delete_candles(KEY, [T0 + 5 * MIN])
    assert (await healer.heal(KEY)).escalated
    now[0] += 601
    assert (await healer.heal(KEY)).resolved


async def test_a_source_that_disagrees_with_the_stored_neighbours_is_refused(
    store: MarketStore,
) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(10) if i != 4])
    other_market = [c._replace(close=c.close * 1.1) for c in (candle(i) for i in range(10))]
    outcome = await Healer(store, History(other_market), Events(), policy=FAST).heal(KEY)
    assert outcome.escalated and "disagrees with the stored candle" in outcome.reason
    assert outcome.cause is Cause.SOURCE_DISAGREES
    assert len(store.candles(KEY)) == 9  # nothing written


async def test_a_hole_the_exchange_has_no_candles_for_escalates_at_once(store: MarketStore) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(10) if i not in (4, 5)])
    source = History([candle(i) for i in range(10) if i not in (4, 5)])
    outcome = await Healer(store, source, Events(), policy=FAST).heal(KEY)
    assert outcome.escalated and outcome.attempts == 1
    assert "no candles for 2024-01-01 00:04Z..2024-01-01 00:05Z" in outcome.reason
    assert outcome.cause is Cause.SOURCE_EMPTY


async def test_no_history_source_escalates(store: MarketStore) -> None:
    store.upsert_candles(KEY, [candle(0), candle(3)])
    outcome = await Healer(store, None, Events(), policy=FAST).heal(KEY)
    assert outcome.escalated and "no history source for binance" in outcome.reason
    assert outcome.cause is Cause.NO_SOURCE


async def test_a_source_error_no_retry_can_fix_escalates_with_its_cause(
    store: MarketStore,
) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(10) if i != 4])
    source = History([], fail=ConfigError("binance rejected the API credentials"))
    outcome = await Healer(store, source, Events(), policy=FAST).heal(KEY)
    assert (outcome.escalated, outcome.attempts, source.calls) == (True, 1, 1)
    assert outcome.cause is Cause.SOURCE_FAILED
    assert outcome.to_dict()["cause"] == "source_failed"
    assert outcome.to_dict()["reason"] == "binance rejected the API credentials"


async def test_structural_damage_escalates_without_touching_the_series(
    store: MarketStore,
) -> None:
    rows = [candle(i)._replace(high=candle(i).low - 1) for i in range(10)]  # every row impossible
    store.upsert_candles(KEY, rows)
    source = History([candle(i) for i in range(10)])
    strict = FAST.model_copy(update={"escalate_below": 80.0})  # all rows impossible: score 70
    outcome = await Healer(store, source, Events(), policy=strict).heal(KEY)
    assert outcome.action is Action.ESCALATE and outcome.cause is Cause.STRUCTURAL
    assert (outcome.attempts, source.calls, store.candles(KEY)) == (0, 0, rows)
    assert outcome.to_dict() | {"incident_id": None} == {
        "action": "ESCALATE", "resolved": False, "escalated": True, "attempts": 0,
        "backfilled": 0, "dropped": 0, "score_before": outcome.before.score,
        "score_after": None, "incident_id": None, "reason": outcome.reason,
        "cause": "structural",
    }  # fmt: skip


async def test_a_stale_live_feed_is_reconnected_then_backfilled(store: MarketStore) -> None:
    store.upsert_candles(KEY, [candle(i) for i in range(10)])
    reconnected: list[SeriesKey] = []

    async def reconnect(key: SeriesKey) -> None:
        reconnected.append(key)

    clock = lambda: (T0 + 15 * MIN + 20_000) / 1000  # noqa: E731  # candles up to 13 have closed
    healer = Healer(store, History([candle(i) for i in range(14)]), Events(), policy=FAST,
                    reconnect=reconnect, clock=clock)  # fmt: skip
    outcome = await healer.heal(KEY, fresh=True)
    assert outcome.action is Action.CONNECTOR_RECOVERY and outcome.resolved
    assert reconnected == [KEY]
    assert store.candles(KEY)[-1] == candle(13)


async def test_the_candle_at_the_seam_is_refetched_when_the_stream_disagrees(
    store: MarketStore,
) -> None:
    forming = candle(9)._replace(close=109.5, volume=1.0)  # stored while it was still forming
    store.upsert_candles(KEY, [*(candle(i) for i in range(9)), forming])
    live = [candle(9), candle(10)]
    outcome = await Healer(
        store, History([candle(i) for i in range(11)]), Events(), policy=FAST
    ).heal(KEY, live=live)
    assert outcome.resolved and outcome.before.has("seam")
    assert store.candles(KEY)[-1] == candle(9)


async def test_a_higher_timeframe_is_rebuilt_from_a_source_that_only_has_1m(
    store: MarketStore,
) -> None:
    minutes = [candle(i) for i in range(60)]
    agg = CandleAggregator(("1m", "5m"))
    five = [r for m in minutes for _, r in agg.add_candle("1m", m)]
    key = SeriesKey("binance", "BTC/USDT", "5m")
    store.upsert_candles(key, [r for i, r in enumerate(five) if i != 6])
    outcome = await Healer(store, History(minutes), Events(), policy=FAST).heal(key)
    assert outcome.resolved
    assert store.candles(key) == five


async def test_the_synthetic_market_repairs_its_own_series(tmp_path: Path) -> None:
    from barfinex_cli.market import synthetic

    rows = synthetic.default_dataset(["BTC/USDT"], days=0.1)["BTC/USDT"]
    key = SeriesKey("synthetic", "BTC/USDT", "1m")
    with MarketStore(tmp_path / "market.db") as db:
        db.upsert_candles(key, [r for i, r in enumerate(rows) if not 50 <= i < 60])
        source = history_source_for("synthetic", load_settings(None, home=tmp_path))
        assert source is not None
        await source.start()
        outcome = await Healer(db, source, Events(), policy=FAST).heal(key)
        await source.stop()
        assert outcome.resolved and outcome.backfilled == 10
        assert db.candles(key) == rows


def test_the_policy_table() -> None:
    clean = scan_rows(KEY, [candle(i) for i in range(20)])
    holes = scan_rows(KEY, [candle(i) for i in range(20) if i != 7])
    late = scan_rows(KEY, [candle(i) for i in range(20)], now_ms=T0 + 21 * MIN + 20_000)
    stale = scan_rows(KEY, [candle(i) for i in range(20)], now_ms=T0 + 30 * MIN)
    disorder = scan_rows(KEY, [candle(i) for i in (0, 2, 1, 3)])
    wreck = scan_rows(KEY, [candle(i) for i in (5, 0, 5, 1, 5, 2, 5, 3)] * 3)
    assert decide(clean)[0] is Action.NONE
    assert decide(holes)[0] is Action.TARGETED_REPAIR
    assert decide(late)[0] is Action.VERIFY_ONLY
    assert decide(stale, can_reconnect=True)[0] is Action.CONNECTOR_RECOVERY
    assert decide(stale)[0] is Action.TARGETED_REPAIR  # no feed to reconnect: backfill the tail
    assert decide(disorder)[0] is Action.VERIFY_ONLY  # the store already holds one sorted copy
    action, reason = decide(wreck)
    assert action is Action.ESCALATE and "duplicate, out_of_order" in reason
    assert decide(wreck, HealingPolicy(escalate_below=0))[0] is Action.TARGETED_REPAIR


def test_a_plan_lists_rows_to_drop_and_ranges_to_backfill() -> None:
    off_grid = CandleRow(T0 + 5 * MIN + 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1)
    history = [*(candle(i) for i in range(40) if i not in (3, 4, 5)), off_grid]
    jump = candle(40)._replace(open=105.0, low=104.0)  # 25% below the last stored close
    report = scan_series(KEY, history, [jump])
    todo = plan(report)
    assert todo.action is Action.TARGETED_REPAIR
    assert todo.drop == (T0 + 5 * MIN + 1,)
    assert todo.backfill == ((T0 + 3 * MIN, T0 + 5 * MIN), (T0 + 39 * MIN, T0 + 39 * MIN))
    assert todo.candles_to_fetch == 4
    assert plan(scan_rows(KEY, [candle(0)])).backfill == ()
