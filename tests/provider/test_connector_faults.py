"""The rule that turns a connector's health `degraded` and back (`connectors/faults.py`)."""

from __future__ import annotations

from barfinex_cli.provider.connectors.faults import FaultLog


def test_a_failed_call_degrades_and_the_next_answer_restores() -> None:
    log = FaultLog()
    assert log.state(streams_down=False) == "ok"
    log.noted("unavailable", "binance is not available (Service Unavailable)")
    log.failed()
    log.noted("timeout", "cannot reach binance (offline?): request timed out")
    log.failed()
    assert (log.streak, log.state(streams_down=False)) == (2, "degraded")
    log.answered()
    assert (log.streak, log.state(streams_down=False)) == (0, "ok")
    assert (log.counts["unavailable"], log.counts["timeout"]) == (1, 1)  # counts outlive the run
    assert set(log.last) == {"unavailable", "timeout"}


def test_a_run_of_failures_is_forgotten_once_older_than_the_memory() -> None:
    log = FaultLog(memory_s=120.0)
    log.noted("unreachable", "cannot reach binance (offline?): connection refused")
    log.failed()
    assert log.last_failure is not None
    assert log.state(streams_down=False, now=log.last_failure + 119.0) == "degraded"
    assert log.state(streams_down=False, now=log.last_failure + 121.0) == "ok"
    assert log.streak == 1  # still counted: nothing has answered since


def test_a_stream_down_degrades_whatever_rest_says() -> None:
    log = FaultLog()
    log.answered()
    assert log.state(streams_down=True) == "degraded"


def test_a_remembered_error_is_one_trimmed_line_and_not_counted() -> None:
    log = FaultLog()
    log.remember("gap", "BTC/USDT 1m:\n  3 candle(s) lost " + "x" * 400)
    assert log.counts["gap"] == 0
    text = log.last["gap"].error
    assert "\n" not in text and len(text) == 240 and text.endswith("…")
    assert text.startswith("BTC/USDT 1m: 3 candle(s) lost")
