"""`bfx events dead-letters`: the reason and a one-line clipped preview, never a whole payload."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.cli.main import app
from barfinex_cli.contracts.codec import encode
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.inspector import AlertRaised
from conftest import REDIS_URL
from namespaces import purge

HUGE = encode(make_event(AlertRaised(severity="warning", message="x" * 500_000), source="t"))


async def _dead_letter(namespace: str) -> None:
    """Publish an oversized event and a multi-line garbage message; let a group refuse them."""
    bus = RedisStreamsBus(REDIS_URL, namespace)
    try:
        consumer = await bus.consumer("g", "c", ["inspector.alert"], start="0")
        await bus.publish_raw("inspector.alert", HUGE)
        await bus.publish_raw("inspector.alert", b"not\njson")
        for _ in range(20):
            await consumer.ack(await consumer.fetch(100, 50))
            if consumer.dead_lettered == 2:
                return
        raise AssertionError("the consumer did not dead-letter both messages")
    finally:
        await bus.close()


def test_dead_letters_print_the_reason_and_a_clipped_preview(
    runner: CliRunner, cli_env: dict[str, str]
) -> None:
    namespace = cli_env["BFX_NAMESPACE"]
    asyncio.run(_dead_letter(namespace))
    try:
        text = runner.invoke(app, ["events", "dead-letters"])
        as_json = runner.invoke(app, ["events", "dead-letters", "--json"])
    finally:
        asyncio.run(purge(namespace))
    assert text.exit_code == 0, text.output
    huge_line, garbage_line = text.stdout.splitlines()  # one line each: newlines are escaped
    assert f"over the limit of 262144 bytes (max_event_bytes)  [{len(HUGE)} bytes] " in huge_line
    assert huge_line.endswith("…") and len(huge_line) < 600
    assert garbage_line.endswith("[8 bytes] not\\njson")
    assert as_json.exit_code == 0, as_json.output
    huge, garbage = (json.loads(line) for line in as_json.stdout.splitlines())
    assert huge["size"] == len(HUGE) and huge["clipped"] is True
    assert huge["preview"] == HUGE[:200].decode()
    assert "over the limit" in huge["error"]
    assert garbage["preview"] == "not\\njson" and garbage["clipped"] is False
    assert "Invalid JSON" in garbage["error"]
    assert "data" not in huge  # the payload itself is never printed
