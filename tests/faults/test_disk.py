"""The disk refusing writes: full mid-recording, or a data directory that is read-only.

The recorder (the consumer that writes every bus event into audit.db) runs on the Redis bus of a
`redis-server` this test owns, its data directory on a small tmpfs this test mounts (root is
needed; without it the test is skipped saying so). The disk is filled while events keep coming:
the recorder says once, clearly, that it cannot write, keeps running and acknowledges nothing it
has not written; once space is freed it records everything, each event once, and `PRAGMA
integrity_check` is ok. A data directory mounted read-only (Linux refuses to turn a mount with
open writers read-only, so the role meets it at its start, as a restarted role would) stops the
real `bfx events record` with one line naming it; what was published meanwhile waits on the
bus and is recorded once the directory is writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.recorder import Recorder
from bus.redis_faults import RedisServer
from bus.test_reconnect import candle, until

pytestmark = pytest.mark.redis


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[RedisStreamsBus]:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "disk", outage_s=30)
    try:
        yield bus
    finally:
        await bus.close()
        server.stop()


def _fill(mount: Path, leave: int) -> Path:
    """Fill the mount but for `leave` bytes; return the filler file."""
    filler = mount / "filler"
    stat = os.statvfs(mount)
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def _open(home: Path) -> AuditStore:
    home.mkdir()
    return AuditStore(home / "audit.db")


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


async def _record(
    bus: RedisStreamsBus, home: Path, mount: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _open(home)
    consumer = await bus.consumer("recorder", "r1", ["*"], start="0")
    recorder = Recorder(consumer, store, batch_size=50, block_ms=50)
    recorder.retry_s = 0.1
    stop = asyncio.Event()
    await bus.publish_many([candle(i) for i in range(20)])
    running = asyncio.create_task(recorder.run(stop))
    try:
        await until(lambda: recorder.written == 20)
        filler = _fill(mount, 8_192)
        with caplog.at_level(logging.WARNING, logger="bfx.recorder"):
            await bus.publish_many([candle(i) for i in range(20, 2_000)])
            await until(lambda: recorder.refusing)
            await asyncio.sleep(0.5)  # it keeps trying, and keeps running
            assert not running.done()
            assert recorder.written < 2_000
            filler.unlink()
            await until(lambda: recorder.written == 2_000, 30)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        store.close()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said == [
        "cannot write the audit store; retrying, nothing is acknowledged until it is written — "
        "free space or make the data directory writable"
    ]  # once, however many retries
    assert not recorder.refusing
    with AuditStore(home / "audit.db", read_only=True) as audit:
        recorded = audit.query(["market.candle"], limit=None)
    times = [e.payload.open_time for e in recorded]
    assert len(times) == len(set(times)) == 2_000  # everything, each once
    with sqlite3.connect(home / "audit.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    pending = await bus.redis.xpending(bus.key("market.candle"), "recorder")
    assert pending["pending"] == 0


async def test_a_full_disk_pauses_the_recorder_which_loses_nothing_and_resumes(
    bus: RedisStreamsBus, tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _record(bus, tmpfs / "home", tmpfs, caplog)


def test_a_read_only_data_dir_stops_the_recorder_with_one_line_and_loses_nothing(
    tmp_path: Path, tmpfs: Path
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    asyncio.run(server.start())
    home = tmpfs / "home"
    _open(home).close()  # an audit store from an earlier run
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(BFX_HOME=str(home), BFX_REDIS_URL=server.url, BFX_NAMESPACE="disk")
    record = [sys.executable, "-m", "barfinex_cli", "events", "record"]
    try:
        asyncio.run(_publish(server.url, 50))
        _remount(tmpfs, "ro")
        refused = subprocess.run(record, env=env, capture_output=True, text=True, timeout=60)
        _remount(tmpfs, "rw")
        with subprocess.Popen(record, env=env, stderr=subprocess.PIPE, text=True) as again:
            deadline = time.monotonic() + 60
            while _recorded(home) < 50 and time.monotonic() < deadline:
                time.sleep(0.2)
            again.send_signal(signal.SIGINT)
            again.communicate(timeout=30)
    finally:
        server.stop()
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot use {home} as the data directory (Read-only file system) — pass "
        "--data-dir or set BFX_HOME to a writable folder"
    ]
    assert _recorded(home) == 50  # what was published meanwhile waited on the bus
    with sqlite3.connect(home / "audit.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def _publish(url: str, n: int) -> None:
    bus = RedisStreamsBus(url, "disk")
    try:
        await bus.publish_many([candle(i) for i in range(n)])
    finally:
        await bus.close()


def _recorded(home: Path) -> int:
    try:
        with AuditStore(home / "audit.db", read_only=True) as audit:
            return int(dict(audit.types()).get("market.candle", 0))
    except Exception:  # being written
        return 0
