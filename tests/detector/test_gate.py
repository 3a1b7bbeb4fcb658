"""The detector's candle gate: refuses candles dated far ahead, accepts a real jump, sees stalls."""

from __future__ import annotations

from barfinex_cli.detector.gate import CONFIRM, STALL_CANDLES, CandleGate

MINUTE = 60_000
T0 = 1_704_067_200_000
YEAR = 365 * 86_400_000


def test_a_candle_dated_far_ahead_is_refused_and_the_next_real_one_passes() -> None:
    gate: CandleGate[str] = CandleGate(MINUTE, live=False)
    last = T0
    assert gate.admit("X", "far", T0 + 76 * YEAR, last_open=last, now_ms=T0 + MINUTE) == []
    assert gate.refused == 1 and gate.last_refusal is not None
    assert gate.status(T0 + MINUTE) == "degraded"
    assert gate.admit("X", "next", T0 + MINUTE, last_open=last, now_ms=T0 + MINUTE) == ["next"]
    gate.evaluated()
    assert gate.status(T0 + 2 * MINUTE) == "degraded"  # a refusal is reported for a while
    assert gate.status(T0 + 20 * MINUTE) == "ok"


def test_candles_that_continue_each_other_after_a_long_hole_are_a_real_jump() -> None:
    gate: CandleGate[int] = CandleGate(MINUTE, live=False)
    start = T0 + YEAR  # a replay resuming a year later
    got = [gate.admit("X", i, start + i * MINUTE, last_open=T0, now_ms=T0) for i in range(CONFIRM)]
    assert got[:-1] == [[]] * (CONFIRM - 1)
    assert got[-1] == list(range(CONFIRM))  # evaluated in order, none lost


def test_bad_dates_in_a_row_are_dropped_when_the_old_present_goes_on() -> None:
    gate: CandleGate[str] = CandleGate(MINUTE, live=False)
    assert gate.admit("X", "a", T0 + YEAR, last_open=T0, now_ms=T0) == []
    assert gate.admit("X", "b", T0 + YEAR + MINUTE, last_open=T0, now_ms=T0) == []
    assert gate.admit("X", "real", T0 + MINUTE, last_open=T0, now_ms=T0) == ["real"]
    assert gate.admit("X", "c", T0 + YEAR + 2 * MINUTE, last_open=T0 + MINUTE, now_ms=T0) == []


def test_live_candles_are_judged_against_the_wall_clock() -> None:
    gate: CandleGate[str] = CandleGate(MINUTE, live=True)
    now = T0 + 10 * MINUTE
    assert gate.admit("X", "ok", now - MINUTE, last_open=None, now_ms=now) == ["ok"]
    assert gate.admit("X", "ahead", now + 10 * MINUTE, last_open=None, now_ms=now) == []
    assert gate.refused == 1


def test_candles_that_keep_arriving_unevaluated_are_a_stall() -> None:
    gate: CandleGate[str] = CandleGate(MINUTE, live=True)
    for _ in range(STALL_CANDLES - 1):
        gate.skipped()
    assert not gate.stalled and gate.status(T0) == "ok"
    gate.skipped()
    assert gate.stalled and gate.status(T0) == "stalled"
    gate.evaluated()
    assert gate.status(T0) == "ok"
