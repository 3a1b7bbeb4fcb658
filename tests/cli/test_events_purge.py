"""`bfx events purge` drops one namespace's Redis keys, only with --yes, and leaves the rest."""

from __future__ import annotations

import json
import uuid

import redis
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from conftest import REDIS_URL  # type: ignore[attr-defined]


def _keys(client: redis.Redis, namespace: str) -> list[bytes]:
    return list(client.scan_iter(match=f"bfx:{namespace}:*", count=500))


def test_purge_deletes_only_that_namespaces_keys_and_only_with_yes(
    runner: CliRunner, namespace: str
) -> None:
    other = f"test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for i in range(3):  # real streams, as the bus writes them
            client.xadd(f"bfx:{namespace}:market.candle.{i}", {"e": b"x"})
        client.set(f"bfx:{namespace}:_lease:detector.a", b"host")
        client.xadd(f"bfx:{other}:market.candle", {"e": b"x"})
        client.set(f"bfx:{namespace}x:near", b"not mine")  # a longer namespace: kept

        asked = runner.invoke(app, ["events", "purge"])
        assert asked.exit_code == 2
        assert f"would delete 4 Redis keys of namespace {namespace}" in asked.stderr
        assert "add --yes" in asked.stderr and len(_keys(client, namespace)) == 4

        done = runner.invoke(app, ["events", "purge", "--yes", "--json"])
        assert done.exit_code == 0, done.stderr
        assert json.loads(done.stdout) == {
            "namespace": namespace, "redis": REDIS_URL, "deleted": 4,
        }  # fmt: skip
        assert _keys(client, namespace) == []
        assert len(_keys(client, other)) == 1 and client.get(f"bfx:{namespace}x:near")

        named = runner.invoke(app, ["events", "purge", "--namespace", other, "--yes"])
        assert named.exit_code == 0, named.stderr
        assert f"deleted 1 Redis key of namespace {other}" in named.stdout
        assert _keys(client, other) == []
    finally:
        client.delete(f"bfx:{namespace}x:near")
        for key in _keys(client, namespace) + _keys(client, other):
            client.delete(key)
        client.close()


def test_purge_of_a_bad_namespace_or_the_in_process_bus_is_one_line_exit_2(
    runner: CliRunner,
) -> None:
    bad = runner.invoke(app, ["events", "purge", "--namespace", "a*", "--yes"])
    assert bad.exit_code == 2 and "--namespace 'a*'" in bad.stderr
    memory = runner.invoke(app, ["--bus", "memory", "events", "purge", "--yes"])
    assert memory.exit_code == 2 and "nothing to purge" in memory.stderr
