"""`bfx up` survives each of its roles SIGKILLed in turn, and the advisor frozen for a while.

One run on a test-owned `redis-server` (persistent) replays 0.1 day of two symbols (212 live 1m,
5m, 15m and 1h candles, kept small: under lock-step, bfx up's default for replays, every kill
stalls the replay until the role is back, and the run with its undisturbed twin takes 3-5
minutes on a loaded 2-core machine) at 600x. `BFX_FAULTS_CANDLES` asks for more (`nox -s
faults_long` runs it with the 10,000 of issue 13); the time limits grow with it. The detector,
recorder, advisor, inspector and provider are each SIGKILLed once, in turn, each after the flow
has moved on since the last restart; then the advisor is frozen (SIGSTOP) for 12 s and let go
(SIGCONT) — lock-step holds the replay meanwhile. The supervisor restarts every killed role. At
the end audit.db must hold every link of the chain: each candle once, each signal from a
recorded candle, an outcome for every signal, a final verdict for every decision, an order for
every ALLOW, no client order id twice, no signal with two entry orders, every filled entry
protected; the signals must be exactly the strategy scanned over the stored candles and those of
an undisturbed run, and so must the entry orders. A role killed between publishing its outcome
and marking its input handled publishes no second outcome after its restart, and every filled
entry's protection is announced on the bus (`inspector.protective.placed`), also when the
inspector died between placing and announcing it (see docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bus.redis_faults import RedisServer
from faults.stack import Flow, Stack, wait_for

HISTORY = 60
"""Base (1m) candles of each symbol kept as warm-up history, never streamed."""
SYMBOLS = 2


def _streamed(minutes: int) -> int:
    """Candle events `minutes` of live 1m market make: each symbol's 1m, 5m, 15m and 1h closes."""
    return SYMBOLS * (minutes + minutes // 5 + minutes // 15 + minutes // 60)


def _days_for(candles: int) -> str:
    """The `--days` whose live part streams at least `candles` candle events."""
    minutes = 1
    while _streamed(minutes) < candles:
        minutes += 1
    return f"{(minutes + HISTORY + 0.5) / 1440:.6f}"  # the synthetic market truncates to minutes


CANDLES = int(os.environ.get("BFX_FAULTS_CANDLES", "212"))
"""Candle events to replay: 212 (0.1 day) keeps the suite's time; issue 13 asks for 10,000."""
SCALE = max(1.0, CANDLES / 212)
"""How much longer than the default run every time limit is."""

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(int(420 * SCALE))]

UP = ("--speed", "600", "--days", _days_for(CANDLES), "--history", str(HISTORY))
KILLS = ("detector", "recorder", "advisor", "inspector", "provider")
FREEZE_S = 12.0


async def _server(tmp_path: Path, name: str) -> RedisServer:
    server = RedisServer(tmp_path / name, persistent=True)
    server.data.mkdir()
    await server.start()
    return server


def _progress(stack: Stack) -> int:
    return stack.length("detector.signal") + stack.length("advisor.decision")


async def test_each_role_killed_in_turn_and_the_advisor_frozen_lose_and_double_nothing(
    tmp_path: Path,
) -> None:
    t0 = time.monotonic()
    server = await _server(tmp_path, "redis-calm")
    try:
        calm = Stack(tmp_path, "calm", server, *UP)
        calm.finish(timeout_s=300 * SCALE)
        server.stop()
        server = await _server(tmp_path, "redis-hit")
        print("calm run", round(time.monotonic() - t0, 1))
        t0 = time.monotonic()
        hit = Stack(tmp_path, "hit", server, *UP)
        try:
            wait_for("the first decisions", lambda: _alive(hit) and _progress(hit) >= 6, 120)
            for role in KILLS:
                hit.kill(role)
                _moves_on(hit, f"the flow to go on after the {role} restart")
            advisor = hit.pid("advisor")
            assert advisor is not None
            rss_before = hit.rss_kib(advisor)
            os.kill(advisor, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                time.sleep(0.5)  # noqa: ASYNC251 — a decision it had already sent lands first
                decided = hit.length("advisor.decision")
                signals = hit.length("detector.signal")
                wait_for("the freeze to last", lambda: time.monotonic() - frozen_at >= FREEZE_S, 30)
                assert hit.length("advisor.decision") == decided  # it really was frozen
                came = hit.length("detector.signal") - signals  # 0: lock-step held the replay
            finally:
                os.kill(advisor, signal.SIGCONT)
            wait_for("the advisor to catch up",
                     lambda: hit.length("advisor.decision") > decided, 60)  # fmt: skip
            rss_after = hit.rss_kib(advisor)
            print("hit: faults done at", round(time.monotonic() - t0, 1))
            summary = hit.finish(timeout_s=300 * SCALE)
            print("hit: finished at", round(time.monotonic() - t0, 1))
        finally:
            hit.close()
    finally:
        server.stop()
    restarts = {r["name"]: r["restarts"] for r in summary["roles"]}
    for role in KILLS:
        name = next(n for n in restarts if n.split(":")[0] == role)
        assert restarts[name] >= 1, f"{role} was not restarted: {summary['roles']}"
    assert rss_after < rss_before * 1.5 + 20_000, (rss_before, rss_after)  # bounded memory
    before, after = Flow(calm.home), Flow(hit.home)
    assert len(before.candles) >= CANDLES, (len(before.candles), CANDLES)
    before.check_links()
    after.check_links()
    before.check_protected()
    after.check_protected()
    strategy = tmp_path / "momentum_faults.py"
    assert before.missed_signals(calm.home, strategy) == {"BTC/USDT": 0, "ETH/USDT": 0}
    assert after.missed_signals(hit.home, strategy) == {"BTC/USDT": 0, "ETH/USDT": 0}
    assert after.candle_keys() == before.candle_keys()
    assert after.signal_keys() == before.signal_keys()
    # a role killed between publishing its outcome and acknowledging its input publishes no
    # second one after its restart (the advisor marks the signal handled with the publish; the
    # inspector's verdict keeps its derived id): nothing doubled, not even once
    nothing = {"signals decided twice": 0, "decisions ruled twice": 0}
    assert before.doubled == after.doubled == nothing, after.doubled
    assert before.unpublished == after.unpublished == 0  # the paper broker's outbox: none lost
    print("signals during the freeze", came, "doubled", after.doubled, "unannounced protection",
          after.unannounced, "unpublished orders", after.unpublished, "orders calm",
          len(before.orders), "hit", len(after.orders))  # fmt: skip
    assert after.entry_orders() == before.entry_orders()  # lock-step: the same orders


def _moves_on(stack: Stack, what: str) -> None:
    before = _progress(stack)
    wait_for(what, lambda: _alive(stack) and _progress(stack) >= before + 4, 90)


def _alive(stack: Stack) -> bool:
    stack.alive()
    return True
