"""`bfx up` asked to stop after its Redis died: every role ends in seconds, the stores stay whole.

Before, each role sat in the bus's outage retry (up to `redis_outage_s`, 60 s) and `bfx up`
gave each tier 20 s before killing it: a SIGTERM took a minute or more. Now a stopping role's
bus calls stop waiting for Redis, so each role ends on its own with its one-line error; `bfx up`
prints its summary, says Redis stopped answering, and exits 3 (README, exit codes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from bus.redis_faults import RedisServer
from faults.stack import ROLE_COMMANDS, Stack, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

STOP_BOUND_S = 15.0
"""Generous on a loaded 2-core machine (about 7 s measured), far below the old 60-100 s."""

OUTAGE_SEEN = "Redis unreachable; retrying with backoff"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone too: it only waits for its parent to read its exit code
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


async def test_sigterm_with_redis_dead_stops_every_role_within_seconds_and_keeps_the_stores_whole(
    tmp_path: Path,
) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", persistent=False)
    await server.start()
    stack = Stack(tmp_path, "up", server, "--speed", "60", "--days", "1", "--history", "200")
    logs = stack.home / "logs"
    try:
        pids: dict[str, int] = {}

        def running() -> bool:
            stack.alive()
            pids.update({r: p for r in ROLE_COMMANDS if (p := stack.pid(r)) is not None})
            return len(pids) == len(ROLE_COMMANDS) and stack.length("market.candle") > 0

        wait_for("every role to run and the replay to publish candles", running, 180)
        server.stop(kill=True)

        def outage_seen_by_every_role() -> bool:
            stack.alive()
            found = {
                p.stem.split(":")[0] for p in logs.glob("*.log") if OUTAGE_SEEN in p.read_text()
            }
            return found >= set(ROLE_COMMANDS)

        wait_for("every role to ride out the outage", outage_seen_by_every_role, 60)
        stack.proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        wait_for("bfx up to exit", lambda: stack.proc.poll() is not None, STOP_BOUND_S)
        took = time.monotonic() - asked
        out, err = stack.proc.communicate()
    finally:
        stack.close()
        server.stop()
    assert took < STOP_BOUND_S
    assert stack.proc.returncode == 3, err[-3000:]  # README: a service (Redis) does not answer
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: Redis not reachable at {server.url} (it stopped answering")
    assert "role did not stop in time" not in err  # each ended on its own: none was killed
    summary = json.loads(out)
    assert summary["redis_lost"] is True
    assert {r["name"].split(":")[0] for r in summary["roles"]} == set(ROLE_COMMANDS)
    assert all(_gone(pid) for pid in pids.values())
    for role in ROLE_COMMANDS:  # each says why it stopped without flushing, in one line
        lines = next(logs.glob(f"{role}*.log")).read_text().strip().splitlines()
        assert lines[-1].startswith("error: Redis not reachable"), (role, lines[-3:])
        assert "(stopping; gave up waiting for it after" in lines[-1], (role, lines[-1])
    stores = sorted(stack.home.glob("*.db"))
    assert {"audit.db", "market.db", "inspector.db"} <= {p.name for p in stores}
    for path in stores:
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path
