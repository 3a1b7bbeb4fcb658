"""`bfx events lag`: each group's backlog per stream, and the entries the stream cap took."""

from __future__ import annotations

import asyncio
import json
import re

from typer.testing import CliRunner

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.cli.main import app
from bus.test_semantics import candle, drain
from conftest import REDIS_URL
from namespaces import purge

CAP = 50


async def _overrun(namespace: str) -> tuple[int, bool]:
    """Leave group `slow` overrun on a stream capped at `CAP`, and `keen` caught up.

    Return how many entries `slow` lost and whether the server counts them (Redis 7).
    """
    bus = RedisStreamsBus(REDIS_URL, namespace, maxlen=CAP)
    try:
        await bus.publish(candle(0))
        slow = await bus.consumer("slow", "c1", ["market.candle"], start="$")
        keen = await bus.consumer("keen", "c1", ["market.candle"], start="$")
        await bus.publish_many([candle(i) for i in range(1, 11)])
        assert len(await drain(slow)) == 10  # read to the end once: Redis 7 counts from here
        assert len(await drain(keen)) == 10
        for start in range(11, 311, 25):
            await bus.publish_many([candle(i) for i in range(start, start + 25)])
            assert len(await drain(keen)) == 25
        length = int(await bus.redis.xlen(bus.key("market.candle")))
        info = await bus.redis.info("server")
        return 300 - length, int(str(info["redis_version"]).split(".")[0]) >= 7
    finally:
        await bus.close()


def test_lag_shows_the_unread_entries_and_what_the_cap_trimmed_of_each_group(
    runner: CliRunner, cli_env: dict[str, str]
) -> None:
    namespace = cli_env["BFX_NAMESPACE"]
    lost, counted = asyncio.run(_overrun(namespace))
    try:
        as_json = runner.invoke(app, ["events", "lag", "--json"])
        text = runner.invoke(app, ["events", "lag"])
    finally:
        asyncio.run(purge(namespace))
    assert as_json.exit_code == 0, as_json.output
    keen, slow = (json.loads(line) for line in as_json.stdout.splitlines())
    assert keen["group"] == "keen" and keen["unread"] == 0 and keen["pending"] == 0
    assert keen["trimmed"] == 0 and keen["trimmed_uncounted"] == 0 and keen["trimmed_at"] is None
    assert slow["group"] == "slow" and slow["type"] == "market.candle"
    assert slow["unread"] == 300 - lost  # all the stream holds: slow read none of it
    if counted:
        assert (slow["trimmed"], slow["trimmed_uncounted"]) == (lost, 0)
    else:
        assert (slow["trimmed"], slow["trimmed_uncounted"]) == (0, 1)
    assert slow["trimmed_at"] is not None
    assert text.exit_code == 0, text.output
    cells = [
        [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        for line in text.stdout.splitlines()
        if "market.candle" in line
    ]
    assert [c[0] for c in cells] == ["keen", "slow"]  # group, type, consumers, pending, ...
    assert cells[0][2:] == ["1", "0", "0", "0"]
    assert cells[1][2:] == ["1", "0", str(300 - lost), str(lost) if counted else "some"]


def test_lag_on_the_in_process_bus_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--bus", "memory", "events", "lag"])
    assert result.exit_code == 2
    assert "run `bfx events lag` on Redis" in result.stderr
