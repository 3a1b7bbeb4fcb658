"""`bfx events` and `bfx trace` end to end: real Redis, real SQLite, real subprocesses."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from typer.testing import CliRunner

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.cli.main import app
from barfinex_cli.contracts.detector import RuleAttribution, SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from cli.conftest import BfxRun
from conftest import REDIS_URL

CANDLE = CandleClosed(
    exchange="replay",
    symbol="BTC/USDT",
    timeframe="1m",
    open_time=datetime(2024, 1, 1, tzinfo=UTC),
    open=Decimal("100"),
    high=Decimal("101"),
    low=Decimal("99"),
    close=Decimal("100.5"),
    volume=Decimal("3"),
)


def _signal() -> SignalGenerated:
    return SignalGenerated(
        strategy="trend",
        instance="t1",
        exchange="replay",
        symbol="BTC/USDT",
        timeframe="1m",
        candle_time=datetime(2024, 1, 1, tzinfo=UTC),
        direction="long",
        score=2.0,
        threshold=1.5,
        attribution=[
            RuleAttribution(
                rule="ema_cross",
                held=True,
                weight=2.0,
                direction="long",
                values={"ema_fast": 100.2},
            )
        ],
    )


def test_schema_lists_the_catalogue_and_prints_one_json_schema(runner: CliRunner) -> None:
    listing = runner.invoke(app, ["events", "schema", "--json"])
    assert listing.exit_code == 0
    types = {row["type"] for row in json.loads(listing.output)}
    assert {"market.candle", "detector.signal", "inspector.verdict", "advisor.decision"} <= types
    one = runner.invoke(app, ["events", "schema", "market.candle"])
    assert one.exit_code == 0
    assert "open_time" in json.loads(one.output)["properties"]


def test_unknown_event_type_lists_the_known_types_and_exits_2(runner: CliRunner) -> None:
    for args in (["events", "schema", "market.candel"], ["events", "query", "-t", "nope"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "unknown event type" in result.output and "market.candle" in result.output


def test_publish_rejects_an_invalid_payload_naming_the_field(runner: CliRunner) -> None:
    result = runner.invoke(app, ["events", "publish", "market.candle", '{"symbol": "X"}'])
    assert result.exit_code == 2
    assert "not a valid market.candle" in result.output


def test_tail_prints_events_published_by_another_process(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "barfinex_cli",
            "events",
            "tail",
            "-t",
            "inspector.*",
            "--json",
            "--count",
            "1",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # let the tail start and find streams
        sent = bfx(
            "events",
            "publish",
            "inspector.alert",
            '{"severity": "warning", "message": "drawdown near limit"}',
        )
        assert sent.returncode == 0, sent.stderr
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    event = json.loads(out.strip().splitlines()[-1])
    assert event["id"] == sent.stdout.strip()
    assert event["payload"]["message"] == "drawdown near limit"


async def _publish(namespace: str, events: list[Envelope[Any]]) -> None:
    bus = RedisStreamsBus(REDIS_URL, namespace)
    await bus.publish_many(events)
    await bus.close()


async def _purge(namespace: str) -> None:
    bus = RedisStreamsBus(REDIS_URL, namespace)
    await bus.delete_namespace()
    await bus.close()


def test_record_then_query_and_trace_a_chain(bfx: BfxRun, cli_env: dict[str, str]) -> None:
    candle = make_event(CANDLE, source="provider")
    signal_event = make_event(_signal(), source="detector/t1", parent=candle)
    asyncio.run(_publish(cli_env["BFX_NAMESPACE"], [candle, signal_event]))

    recorder = subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", "events", "record"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            q = bfx("events", "query", "--json")
            if q.returncode == 0 and len(q.stdout.strip().splitlines()) == 2:
                break
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=30)
    finally:
        recorder.kill()
    assert recorder.returncode == 0, err
    assert "recorded 2 events" in err

    rows = [json.loads(line) for line in bfx("events", "query", "--json").stdout.splitlines()]
    assert [r["id"] for r in rows] == [candle.id, signal_event.id]
    only = bfx("events", "query", "-t", "detector.*", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in only] == [signal_event.id]

    tree = json.loads(bfx("trace", signal_event.id, "--json").stdout)
    assert tree[0]["event"]["id"] == candle.id
    assert tree[0]["children"][0]["event"]["id"] == signal_event.id
    human = bfx("trace", signal_event.id[:28])
    assert human.returncode == 0
    assert "market.candle" in human.stdout and "detector.signal" in human.stdout
    asyncio.run(_purge(cli_env["BFX_NAMESPACE"]))


def test_trace_of_an_unknown_id_names_the_fix(bfx: BfxRun) -> None:
    result = bfx("trace", "01234567-0000")  # no store yet in this data dir
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no audit store") or "no event" in result.stderr
