"""Starting a backfill's history source: started, stopped, and unreachable as fields, not text."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from barfinex_cli.errors import ServiceUnreachable, TransientError
from barfinex_cli.market.integrity.backfill import (
    BACKFILL_HINT,
    SourceUnreachable,
    backfill_source,
    unreachable_reason,
)
from barfinex_cli.store.market import CandleRow


class Source:
    """A connector-like history source that records its lifecycle; its start may fail."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail is not None:
            raise self.fail

    async def stop(self) -> None:
        self.calls.append("stop")

    async def fetch_candles(
        self, symbol: str, timeframe: str, since_ms: int, until_ms: int | None = None,
        limit: int | None = None,
    ) -> Sequence[CandleRow]:  # fmt: skip
        self.calls.append("fetch")
        return []


async def test_a_source_is_started_for_the_backfill_and_stopped_after() -> None:
    source = Source()
    async with backfill_source(source, "binance") as started:
        await started.fetch_candles("BTC/USDT", "1m", 0)
    assert source.calls == ["start", "fetch", "stop"]


async def test_an_offline_source_is_unreachable_with_the_reason_as_a_field() -> None:
    offline = ServiceUnreachable(
        "cannot reach binance (offline?): name lookup failed — check the network, or use --replay"
    )
    source = Source(fail=offline)
    with pytest.raises(SourceUnreachable) as caught:
        async with backfill_source(source, "binance"):
            pytest.fail("the body must not run when the source cannot start")
    error = caught.value
    assert (error.exchange, error.reason, error.hint) == (
        "binance",
        "name lookup failed",
        BACKFILL_HINT,
    )
    assert error.exit_code == 3
    assert str(error) == f"cannot reach binance to backfill: name lookup failed — {BACKFILL_HINT}"
    assert source.calls == ["start", "stop"]  # stopped even though it never started


async def test_no_source_at_all_is_unreachable_too() -> None:
    with pytest.raises(SourceUnreachable) as caught:
        async with backfill_source(None, "kraken"):
            pytest.fail("the body must not run without a source")
    assert (caught.value.exchange, caught.value.reason) == (
        "kraken", "no connector for it is installed",
    )  # fmt: skip


def test_a_reason_in_other_words_is_kept_whole_without_its_fix() -> None:
    busy = TransientError("binance failed to answer (internal error) — retry in a moment")
    assert unreachable_reason(busy, "binance") == "binance failed to answer (internal error)"
    assert unreachable_reason(TransientError("timeout"), "binance") == "timeout"
