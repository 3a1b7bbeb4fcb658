"""The inspector's HTTP face, KPIs, throttles and live policy reloads, on the running service."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.contracts.advisor import QualityBlocked, SignalReceived
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.rest import PlaceOrderRequest
from inspector.conftest import Market, StartInspector, armed, until


async def test_kpi_positions_policies_and_metrics_answer_with_capital_per_strategy(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    received = SignalReceived(signal_id="s1", strategy="momentum", exchange="replay",
                              symbol="BTC/USDT", direction="long", score=2.0)  # fmt: skip
    await market.bus.publish(make_event(received, source="advisor/advisor"))
    blocked = QualityBlocked(
        signal_id="s1", quality=0.2, threshold=0.6, components={"staleness": 0.2}, reason="stale"
    )
    await market.bus.publish(make_event(blocked, source="advisor/advisor"))
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.decide(stop="0")  # blocked by a policy
    await until(lambda: inspector.verdicts == 2)
    assert inspector.api_url is not None
    async with httpx.AsyncClient(base_url=inspector.api_url) as http:
        kpi: dict[str, Any] = (await http.get("/kpi")).json()
        positions = (await http.get("/positions")).json()["positions"]
        policies = (await http.get("/policies")).json()
        metrics = (await http.get("/metrics")).text
        health = await http.get("/health")
    capital = kpi["strategies"]["momentum"]
    assert capital["decisions"] == 2
    assert capital["blocked"] == {"stage:quality": 1, "policy:risk_per_trade": 1}
    assert Decimal(capital["in_positions"]) > 0 and capital["utilisation"] > 0
    assert kpi["trades"] == 1 and Decimal(kpi["exposure"]) > 0 and "stand_down" in kpi["policies"]
    assert positions[0]["symbol"] == "BTC/USDT"
    assert {g["role"] for g in positions[0]["protective"]} == {"stop_loss", "take_profit"}
    assert policies["digest"] == inspector.governor.policies.digest
    assert 'bfx_inspector_verdicts_total{action="ALLOW"} 1.0' in metrics
    assert health.status_code == 200 and health.json()["entries_open"] is True


async def test_a_throttle_verdict_tells_the_detector_on_the_bus(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("[risk]\nper_trade_pct = 1\n\n[cooldown]\nafter_loss_minutes = 30\n")
    inspector, _, _ = await start_inspector(policy=policy)
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.candle("BTC/USDT", 99, 99, 97, 97.5)  # the stop at 98 fills: a loss
    await until(lambda: inspector.store.counters().losses == 1)
    await market.decide()
    await until(lambda: market.published("inspector.throttle"))
    throttle = (await market.published("inspector.throttle"))[0].payload
    assert throttle.instance == "momentum" and throttle.policy == "cooldown"
    verdicts = [e.payload.verdict for e in await market.published("inspector.verdict")]
    assert verdicts == ["ALLOW", "THROTTLE"]


async def test_an_invalid_policy_edit_keeps_the_old_policies_and_raises_an_alert(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("[risk]\nper_trade_pct = 1\n")
    inspector, _, _ = await start_inspector(policy=policy, policy_poll_s=0.1)
    digest = inspector.governor.policies.digest
    policy.write_text("[risk]\nper_trade_pct = 1\nbogus = 2\n")

    async def refused() -> bool:
        alerts = [e.payload.message for e in await market.published("inspector.alert")]
        return any("policy edit refused" in a for a in alerts)

    await until(refused)
    assert inspector.governor.policies.digest == digest
    policy.write_text("[risk]\nper_trade_pct = 0.5\n")
    await until(lambda: inspector.governor.policies.digest != digest)


async def test_bfx_inspector_status_and_reconcile_talk_to_the_running_inspector(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    assert inspector.api_url is not None
    runner = CliRunner()
    home = ["--data-dir", str(market.settings.home)]
    status = await asyncio.to_thread(
        runner.invoke, app, [*home, "inspector", "status", "--json", "--url", inspector.api_url]
    )
    assert status.exit_code == 0, status.output
    answer = json.loads(status.stdout)
    assert answer["health"]["entries_open"] is True
    assert answer["positions"][0]["symbol"] == "BTC/USDT"
    await market.client.place_order(PlaceOrderRequest(
        client_order_id="by-hand", account="paper", symbol="BTC/USDT", side="buy",
        type="limit", amount=Decimal(1), price=Decimal(90),
    ))  # fmt: skip
    dry = await asyncio.to_thread(
        runner.invoke, app,
        [*home, "inspector", "reconcile", "--dry-run", "--url", inspector.api_url],
    )  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "1 differences (dry run: nothing changed)" in dry.stdout
    assert "order by-hand: store -, provider open buy 1 BTC/USDT -> alert only" in dry.stdout


async def test_a_control_body_that_is_not_a_json_object_is_a_422_and_changes_nothing(
    market: Market, start_inspector: StartInspector
) -> None:
    # found by an audit: a reconcile asked for as a form (dry_run=true) ran as a real one, and a
    # stand-down sent a JSON list stood down until resumed
    inspector, _, _ = await start_inspector()
    assert inspector.api_url is not None
    async with httpx.AsyncClient(base_url=inspector.api_url) as http:
        before = len(await market.published("inspector.reconciled"))
        form = await http.post("/api/v1/reconcile", content=b"dry_run=true")
        text = await http.post("/api/v1/reconcile", json={"dry_run": "false"})
        listed = await http.post("/api/v1/stand-down", json=[1, 2])
        assert len(await market.published("inspector.reconciled")) == before  # nothing applied
        empty = await http.post("/api/v1/reconcile")  # no body: a reconcile, rules applied
    assert (form.status_code, text.status_code, listed.status_code) == (422, 422, 422)
    assert "send a JSON object" in form.json()["detail"]
    assert text.json()["detail"] == "dry_run: expected true or false, not 'false'"
    assert listed.json()["detail"] == "the body must be a JSON object, not list"
    assert inspector.store.counters().stand_down_until_ms is None
    assert empty.status_code == 200 and empty.json()["dry_run"] is False
