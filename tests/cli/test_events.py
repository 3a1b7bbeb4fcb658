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
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.cli.main import app
from barfinex_cli.contracts.detector import RuleAttribution, SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.store.audit import AuditStore
from cli.conftest import BfxRun
from conftest import REDIS_URL
from namespaces import purge

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


def test_a_type_glob_too_long_to_name_any_type_is_one_line_and_exit_2(
    runner: CliRunner, tmp_path: Path
) -> None:
    # found by an audit: a 60,000-character --type glob reached SQLite, whose "LIKE or GLOB
    # pattern too complex" came out as a traceback
    (tmp_path / "home").mkdir()
    with AuditStore(tmp_path / "home" / "audit.db"):
        pass
    result = runner.invoke(app, ["events", "query", "-t", "a*" * 30_000])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --type: a pattern of 60000 characters")
    assert len(result.output.strip().splitlines()) == 1


def test_publish_rejects_an_invalid_payload_naming_the_field(runner: CliRunner) -> None:
    result = runner.invoke(app, ["events", "publish", "market.candle", '{"symbol": "X"}'])
    assert result.exit_code == 2
    assert "not a valid market.candle" in result.output


def test_tail_prints_events_published_by_another_process(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    # from this moment on, so the tail finds the event however long it takes to start (a fixed
    # wait for it to be listening first was a guess a loaded machine could outlast)
    since = f"{time.time_ns() // 1_000_000 - 1}-0"
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "barfinex_cli",
            "events",
            "tail",
            "-t",
            "inspector.*",
            "--since",
            since,
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
    asyncio.run(purge(cli_env["BFX_NAMESPACE"]))


def test_trace_of_an_unknown_id_names_the_fix(bfx: BfxRun) -> None:
    result = bfx("trace", "01234567-0000")  # no store yet in this data dir
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no audit store") or "no event" in result.stderr


def _alert(text: str) -> Envelope[Any]:
    from barfinex_cli.contracts.inspector import AlertRaised

    return make_event(AlertRaised(severity="info", message=text), source="test")


def test_tail_since_an_age_or_an_iso_time_reads_what_came_before(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    sent = _alert("before the tail")
    asyncio.run(_publish(cli_env["BFX_NAMESPACE"], [sent]))
    minute_ago = datetime.now(UTC).replace(microsecond=0).timestamp() - 60
    iso = datetime.fromtimestamp(minute_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for since in ("15m", iso):
        result = bfx("events", "tail", "--since", since, "--count", "1", "--json", timeout=30)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["id"] == sent.id
    asyncio.run(purge(cli_env["BFX_NAMESPACE"]))


async def test_tail_rides_out_a_redis_restart_and_prints_what_comes_after(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    from bus.redis_faults import RedisServer

    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    env = {**cli_env, "BFX_REDIS_URL": server.url}
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "barfinex_cli", "events", "tail", "--count", "2", "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    bus = RedisStreamsBus(server.url, cli_env["BFX_NAMESPACE"])
    try:
        assert tail.stdout is not None
        first, second = _alert("before the restart"), _alert("after the restart")

        async def publish_until_printed(event: Envelope[Any]) -> dict[str, Any]:
            line = asyncio.ensure_future(tail.stdout.readline())  # type: ignore[union-attr]
            while not line.done():  # the tail may not be reading yet: publish until it prints
                await bus.publish(event)
                await asyncio.wait([line], timeout=0.5)
            return dict(json.loads(line.result()))

        got = await asyncio.wait_for(publish_until_printed(first), 30)
        assert got["id"] == first.id
        server.stop(kill=True)
        await server.start()  # empty: no streams, no _types
        await bus.close()
        bus = RedisStreamsBus(server.url, cli_env["BFX_NAMESPACE"])
        got = await asyncio.wait_for(publish_until_printed(second), 30)
        assert got["id"] == second.id
        _, err = await asyncio.wait_for(tail.communicate(), 30)
        assert tail.returncode == 0, err
        assert b"Traceback" not in err
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
        await bus.close()
        server.stop()


def _store_with(home: Path, n: int) -> list[Envelope[Any]]:
    from barfinex_cli.store.audit import AuditStore

    events = []
    for i in range(n):
        event = make_event(CANDLE, source="provider", ts=datetime(2024, 1, 1, 0, i, tzinfo=UTC))
        events.append(event)
    with AuditStore(home / "audit.db") as store:
        store.append(events)
    return events


def test_query_takes_the_newest_by_default_and_says_how_many_more_match(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    events = _store_with(Path(cli_env["BFX_HOME"]), 5)
    newest = bfx("events", "query", "--limit", "2", "--json")
    assert newest.returncode == 0, newest.stderr
    assert [json.loads(line)["id"] for line in newest.stdout.splitlines()] == [
        e.id for e in events[3:]
    ]  # the newest two, oldest first
    assert "3 more older events match" in newest.stderr
    oldest = bfx("events", "query", "--limit", "2", "--oldest", "--json")
    assert [json.loads(line)["id"] for line in oldest.stdout.splitlines()] == [
        e.id for e in events[:2]
    ]
    assert "3 more newer events match" in oldest.stderr
    flipped = bfx("events", "query", "--limit", "2", "--newest", "--json")
    assert [json.loads(line)["id"] for line in flipped.stdout.splitlines()] == [
        events[4].id,
        events[3].id,
    ]
    everything = bfx("events", "query", "--json")
    assert len(everything.stdout.splitlines()) == 5 and everything.stderr == ""


def test_listings_print_ids_whole_even_in_a_narrow_pipe(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    events = _store_with(Path(cli_env["BFX_HOME"]), 2)
    cli_env["COLUMNS"] = "40"
    listed = bfx("events", "query")
    assert all(e.id in listed.stdout for e in events)
    tree = bfx("trace", events[1].id[-12:])  # the end of an id: unique where starts are shared
    assert tree.returncode == 0, tree.stderr
    assert f"* market.candle  2024-01-01 00:01:00  provider  {events[1].id}" in tree.stdout


def test_query_rows_of_order_events_say_side_amount_symbol_price_and_status(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    from barfinex_cli.contracts.orders import Fill, OrderFilled, OrderRejected, OrderState
    from barfinex_cli.store.audit import AuditStore

    order = OrderState(
        client_order_id="o-1", account="paper", exchange="paper", symbol="BTC/USDT",
        side="buy", type="market", amount=Decimal("0.05895425"), filled=Decimal("0.05895425"),
        average_price=Decimal("42001.50"), status="filled",
    )  # fmt: skip
    fill = Fill(price=Decimal("42001.50"), amount=Decimal("0.05895425"), fee=Decimal("1.2"),
                fee_currency="USDT", time=datetime(2024, 1, 1, tzinfo=UTC))  # fmt: skip
    rejected = order.model_copy(update={"status": "rejected", "client_order_id": "o-2"})
    at = datetime(2024, 1, 1, tzinfo=UTC)
    with AuditStore(Path(cli_env["BFX_HOME"]) / "audit.db") as store:
        store.append([
            make_event(OrderFilled(order=order, fill=fill), source="paper", ts=at),
            make_event(OrderRejected(order=rejected, reason="no funds", by="local"),
                       source="paper", ts=at.replace(minute=1)),
        ])  # fmt: skip
    shown = bfx("events", "query", "-t", "order.*")
    assert shown.returncode == 0, shown.stderr
    filled, refused = shown.stdout.splitlines()
    assert filled.endswith(
        "buy 0.05895425 BTC/USDT market @ 42001.5 filled=0.05895425 status=filled id=o-1"
    )
    assert refused.endswith(
        "buy 0.05895425 BTC/USDT market @ 42001.5 status=rejected id=o-2 reason=no funds by=local"
    )
