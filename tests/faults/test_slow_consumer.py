"""A slow consumer: the advisor frozen for 30 s while the replay keeps publishing (issue 13).

`test_role_kills.py` freezes the advisor under lock-step, where the replay waits for it, so no
signal comes while it is away. Here `bfx up --no-lockstep` paces the replay on its own clock
(120x: a 1m candle every half second per symbol) on a test-owned `redis-server`; once signals
flow and the advisor has handled a few, it is SIGSTOPped for 30 s. Meanwhile the detector keeps
publishing signals and the bus holds them for the advisor's consumer group (its lag grows); after
SIGCONT the advisor catches up: the group's lag returns to 0, its memory stays within a generous
bound of what it was before the pause (the backlog waits in Redis, not in the advisor), no stream
grows past the bus's cap, and once the run has ended every signal has exactly one outcome
(decision, rejection or drop), with every other link of the chain intact (`Flow.check_links`).

The cap is the other bound: a backlog longer than `bus_maxlen` entries is trimmed from its oldest
end, unread or not, so it is also how far a consumer may fall behind before it loses events (the
second test, on a bus capped at 1,000). The loss is not silent: the consumer logs a WARNING
naming its group, the stream and how many entries it lost, and the namespace keeps the count for
`bfx events lag` (`bus/redis_trimmed.py`; tests/bus/test_redis_trimmed.py for the details).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from barfinex_cli.bus import redis_trimmed
from barfinex_cli.bus.base import Delivery
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.runtime.settings import Settings
from bus.redis_faults import RedisServer
from bus.test_semantics import candle, drain_until
from conftest import REDIS_URL
from faults.stack import NAMESPACE, OUTCOMES, Flow, Stack, wait_for
from polling import until

pytestmark = pytest.mark.redis

HISTORY = 60
"""Base (1m) candles of each symbol kept as warm-up history, never streamed."""
LIVE_MINUTES = 160
"""Live 1m candles per symbol: 80 s of replay at 120x, long enough to outlast the pause."""
UP = ("--no-lockstep", "--speed", "120", "--history", str(HISTORY),
      "--days", f"{(LIVE_MINUTES + HISTORY + 0.5) / 1440:.6f}")  # fmt: skip
PAUSE_S = 30.0
RSS_SLACK_KIB = 64 * 1024
"""How much the advisor's resident memory may grow across the pause and the catch-up."""
SIGNALS = f"bfx:{NAMESPACE}:detector.signal"


def _outcomes(stack: Stack) -> int:
    return sum(stack.length(t) for t in OUTCOMES)


def _advisor_lag(client: redis.Redis) -> int:
    """Signals the advisor's group has not finished: delivered and unacknowledged, or unread.

    Redis 6.2's XINFO GROUPS has no `lag` field: the unread part is counted from the group's
    last-delivered id to the stream's end.
    """
    groups = [g for g in client.xinfo_groups(SIGNALS) if _text(g["name"]).startswith("advisor.")]
    assert len(groups) == 1, groups
    group = groups[0]
    unread = client.xrange(SIGNALS, "(" + _text(group["last-delivered-id"]), "+")
    return int(group["pending"]) + len(unread or [])


def _stream_lengths(client: redis.Redis) -> dict[str, int]:
    """Entries now on each of the run's streams, by event type."""
    prefix = f"bfx:{NAMESPACE}:"
    keys = [_text(k) for k in client.scan_iter(prefix + "*") if client.type(k) == b"stream"]
    return {k.removeprefix(prefix): int(client.xlen(k)) for k in keys}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.slow
@pytest.mark.timeout(360)
async def test_advisor_paused_30s_while_signals_keep_coming_catches_up_losing_nothing(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=False)
    server.data.mkdir()
    await server.start()
    client = redis.Redis(port=server.port, socket_timeout=5)
    try:
        stack = Stack(tmp_path, "slow", server, *UP)
        try:

            def warmed() -> bool:
                stack.alive()
                return stack.length("detector.signal") >= 3 and _outcomes(stack) >= 3

            wait_for("signals flowing and the advisor handling them", warmed, 180)
            advisor = stack.pid("advisor")
            assert advisor is not None
            rss_before = stack.rss_kib(advisor)
            signals_before = stack.length("detector.signal")
            os.kill(advisor, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                lag_peak = 0

                def paused_long_enough() -> bool:
                    nonlocal lag_peak
                    stack.alive()
                    lag_peak = max(lag_peak, _advisor_lag(client))
                    return time.monotonic() - frozen_at >= PAUSE_S

                wait_for("the pause to last", paused_long_enough, PAUSE_S + 30)
                came = stack.length("detector.signal") - signals_before
                lag_at_resume = _advisor_lag(client)
                outcomes_at_resume = _outcomes(stack)
            finally:
                os.kill(advisor, signal.SIGCONT)
            assert came > 0, "no signal was published while the advisor was paused"
            assert lag_at_resume >= came, (lag_at_resume, came)  # the bus held them all

            def caught_up() -> bool:
                stack.alive()
                return _advisor_lag(client) == 0 and _outcomes(stack) > outcomes_at_resume

            wait_for("the advisor to catch up (its group's lag back to 0)", caught_up, 120)
            assert stack.pid("advisor") == advisor, "the advisor was restarted, not resumed"
            rss_after = stack.rss_kib(advisor)
            summary = stack.finish(timeout_s=240)
            lengths = _stream_lengths(client)
            trimmed = client.hgetall(f"bfx:{NAMESPACE}:{redis_trimmed.TRIMMED_KEY}")
        finally:
            stack.close()
    finally:
        client.close()
        server.stop()
    assert rss_after < rss_before + RSS_SLACK_KIB, (rss_before, rss_after)
    maxlen = Settings.model_fields["bus_maxlen"].default  # the cap every XADD trims to (MAXLEN ~)
    assert lag_peak < maxlen  # the backlog never reached the cap: nothing trimmed unread
    assert max(lengths.values()) <= maxlen, lengths
    assert trimmed == {}  # and no group was found to have lost an entry to it
    advisor_role = next(r for r in summary["roles"] if r["name"].split(":")[0] == "advisor")
    assert advisor_role["restarts"] == 0, summary["roles"]
    flow = Flow(stack.home)
    flow.check_links()  # every signal has an outcome, every decision a verdict, ...
    assert flow.doubled["signals decided twice"] == 0  # ... and exactly one outcome
    assert len(flow.signals) == lengths["detector.signal"]
    print("signals during the pause", came, "lag at resume", lag_at_resume, "peak", lag_peak,
          "signals", len(flow.signals), "outcomes", len(flow.outcomes), "advisor RSS KiB",
          rss_before, "->", rss_after)  # fmt: skip


async def test_a_backlog_longer_than_the_cap_is_trimmed_and_the_consumer_says_how_much_it_lost(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The other side of bounded memory: the cap bounds how far a consumer may fall behind."""
    caplog.set_level(logging.WARNING, "bfx.bus")
    cap = 1_000  # the least `bus_maxlen` allows
    bus = RedisStreamsBus(REDIS_URL, namespace, maxlen=cap)
    try:
        slow = await bus.consumer("slow", "c1", ["market.candle"], start="$")
        await bus.publish_many([candle(i) for i in range(-150, 0)])
        read: list[Delivery] = []

        async def a_full_batch() -> bool:  # 100 of the 150: it is behind, like a slow consumer
            batch = await slow.fetch(100, 50)
            await slow.ack(batch)
            read.extend(batch)
            return bool(read)

        await until(a_full_batch, 10, what="a first batch")
        assert len(read) == 100
        for start in range(0, 3 * cap, 250):
            await bus.publish_many([candle(i) for i in range(start, start + 250)])
        length = int(await bus.redis.xlen(bus.key("market.candle")))
        # MAXLEN ~ trims whole stream nodes (stream-node-max-entries, 100 by default)
        assert cap <= length <= cap + 100, length
        got = await drain_until(slow, length)
        assert len(got) == length
        first = got[0].event.payload
        assert isinstance(first, CandleClosed)
        assert first.open == candle(3 * cap - length).payload.open  # the oldest 2,050 are gone
        lost = 3 * cap + 50 - length
        counted = int(str((await bus.redis.info("server"))["redis_version"]).split(".")[0]) >= 7
        said = [r.getMessage() for r in caplog.records if " lost " in r.getMessage()]
        assert said == [  # ... and said, with the count where Redis keeps one (7 and later)
            f"consumer group slow lost {lost if counted else 'some'} entries of market.candle "
            f"to the stream cap (bus_maxlen {cap}): trimmed before the group read them; speed "
            "it up or raise bus_maxlen (`bfx events lag` shows every group's losses)"
        ]
        recorded = (await redis_trimmed.recorded(bus))[("slow", "market.candle")]
        assert recorded.describe() == (str(lost) if counted else "some")
    finally:
        await bus.delete_namespace()
        await bus.close()
