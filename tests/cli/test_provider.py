"""`bfx provider` mistakes: one line naming the fix, the right exit code, no traceback."""

from __future__ import annotations

import json

import pytest

from cli.conftest import BfxRun


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--redis-url", "redis://127.0.0.1:1/0", "provider", "start"], 3, "Redis not reachable"),
        (["provider", "start", "--speed", "fast"], 2, "--speed takes a multiple"),
        (["provider", "start", "--replay", "/nonexistent.csv", "--port", "0"], 1,
         "omit --replay"),
        (["provider", "start", "--timeframes", "7m", "--port", "0"], 2, "'1m'"),
        (["provider", "start", "--exchange", "binanse"], 2, "did you mean binance"),
        (["provider", "status"], 3, "bfx provider start"),
    ],
)  # fmt: skip
def test_provider_mistakes_get_one_line_with_the_fix(
    bfx: BfxRun, args: list[str], code: int, says: str
) -> None:
    result = bfx(*args)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:")


def test_a_live_exchange_that_cannot_be_reached_exits_3_and_closes_cleanly(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    dead = "http://127.0.0.1:1"  # loopback, nothing listening: the offline path, no traffic out
    cli_env["BFX_BINANCE_URLS"] = json.dumps({"api": {"public": dead, "private": dead}})
    cli_env["BFX_BINANCE_OPTIONS"] = json.dumps(
        {"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "fetchCurrencies": False}
    )
    result = bfx("provider", "start", "--exchange", "binance", "--symbols", "BTC/USDT")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: cannot reach binance")
    assert result.stderr.strip().count("\n") == 0  # one line: no unclosed-session noise
