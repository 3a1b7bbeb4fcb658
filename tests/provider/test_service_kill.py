"""A provider killed after its paper broker committed a fill, before publishing it, loses nothing.

`bfx provider start` (a real process on the shared Redis, in a namespace of its own) replays a
little history, takes a market order over REST, fills it, and dies (`os._exit(137)`, see
`die_before_publish.py`) as its runtime is about to publish the order's events: the account in
paper.db has the fill, the bus has nothing. Restarted on the same data directory and bus, the
provider publishes what its outbox in paper.db kept: the order's submitted, accepted and filled
events, its position and balance, each once on the bus and once in audit.db, with the ids they
were given at the commit; the inspector's retry of the same client order id is answered with
that order and publishes nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from barfinex_cli.bus.redis_group import FIELD
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.codec import decode
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.broker import BrokerStore
from bus.redis_faults import free_port
from conftest import REDIS_URL

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]

ORDER = {"client_order_id": "kill-1", "symbol": "BTC/USDT", "side": "buy", "type": "market",
         "amount": "0.01", "account": "paper"}  # fmt: skip
ORDER_TYPES = ("order.submitted", "order.accepted", "order.filled")
TYPES = (*ORDER_TYPES, "position.changed", "account.balance")
DYING = Path(__file__).with_name("die_before_publish.py")


def _start(home: Path, namespace: str, port: int, *, dying: bool) -> subprocess.Popen[str]:
    env = {"BFX_HOME": str(home), "BFX_NAMESPACE": namespace, "BFX_REDIS_URL": REDIS_URL,
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # fmt: skip
    head = [sys.executable, str(DYING)] if dying else [sys.executable, "-m", "barfinex_cli"]
    return subprocess.Popen(
        [*head, "--log-json", "provider", "start", "--speed", "max", "--days", "0.05",
         "--history", "30", "--symbols", "BTC/USDT", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait(what: str, predicate: Any, timeout_s: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the provider ended ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _answers(base: str, home: Path) -> dict[str, str] | None:
    """Return the auth headers once the gateway answers and the replay has played to its end.

    The broker marks prices from the replayed candles, so an order placed before then would
    be rejected for want of market data.
    """
    token_file = home / "token"
    if not token_file.exists() or not token_file.read_text().strip():
        return None
    try:
        health = httpx.get(f"{base}/api/v1/health", timeout=2)
    except httpx.HTTPError:
        return None
    if health.status_code != 200 or not health.json().get("replay_done"):
        return None
    return {"Authorization": f"Bearer {token_file.read_text().strip()}"}


def _on_bus(client: redis.Redis, namespace: str) -> dict[str, list[str]]:
    """Return the ids of the order's events per type, as the streams hold them (repeats kept)."""
    found: dict[str, list[str]] = {t: [] for t in TYPES}
    for event_type in TYPES:
        for _, fields in client.xrange(f"bfx:{namespace}:{event_type}"):
            event = decode(fields[FIELD])
            payload = event.payload
            order = getattr(payload, "order", None)
            if order is not None and order.client_order_id != ORDER["client_order_id"]:
                continue
            found[event_type].append(event.id)
    return found


async def _purge(namespace: str) -> None:
    bus = RedisStreamsBus(REDIS_URL, namespace)
    try:
        await bus.delete_namespace()
    finally:
        await bus.close()


def test_a_provider_killed_between_committing_a_fill_and_publishing_it_publishes_it_on_restart(
    tmp_path: Path, namespace: str
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers: dict[str, str] = {}
    try:
        proc = _start(tmp_path, namespace, port, dying=True)
        try:
            _wait("the replay to end", lambda: _answers(base, tmp_path) is not None, 120, proc)
            headers = _answers(base, tmp_path) or {}
            try:  # the answer may or may not leave before the process dies
                first = httpx.post(f"{base}/api/v1/orders", headers=headers, json=ORDER, timeout=30)
                assert first.status_code == 201, first.text
            except httpx.HTTPError:
                pass
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 137, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        with BrokerStore(tmp_path / "paper.db") as paper:
            kept = [decode(row.event) for row in paper.unpublished()]
        assert [e.type for e in kept] == list(TYPES)  # committed with the fill...
        assert _on_bus(client, namespace) == {t: [] for t in TYPES}  # ...and never published
        ids = {e.type: e.id for e in kept}

        proc = _start(tmp_path, namespace, port, dying=False)
        try:
            _wait("the provider to serve again", lambda: _answers(base, tmp_path) is not None,
                  120, proc)  # fmt: skip
            headers = _answers(base, tmp_path) or {}
            _wait("the order's events on the bus",
                  lambda: all(_on_bus(client, namespace).values()), 60, proc)  # fmt: skip
            again = httpx.post(f"{base}/api/v1/orders", headers=headers, json=ORDER, timeout=30)
            assert again.status_code == 200, again.text  # the retry: the same order, not a new one
            assert again.json()["status"] == "filled" and again.json()["order_id"] == "paper-1"
            orders = httpx.get(f"{base}/api/v1/orders", headers=headers, timeout=30).json()
            assert [o["client_order_id"] for o in orders["orders"]] == ["kill-1"]
            _wait("the outbox to empty",
                  lambda: not _unpublished(tmp_path), 60, proc)  # fmt: skip
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert _on_bus(client, namespace) == {t: [ids[t]] for t in TYPES}  # once each
        with AuditStore(tmp_path / "audit.db") as audit:
            recorded = audit.query(list(TYPES), limit=None)
        assert sorted(e.id for e in recorded) == sorted(ids.values())  # once each, same ids
    finally:
        client.close()
        asyncio.run(_purge(namespace))


def _unpublished(home: Path) -> int:
    """Count the outbox rows of paper.db, read-only, while the provider has it open."""
    conn = sqlite3.connect(f"file:{home / 'paper.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()
