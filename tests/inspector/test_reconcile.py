"""Reconciliation against the provider: orders placed behind its back, legacy positions at start."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from decimal import Decimal

import httpx
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.store.inspector import InspectorStore
from inspector.conftest import Market, StartInspector, until
from ports import free_port


def _manual(cid: str, kind: str = "limit") -> PlaceOrderRequest:
    return PlaceOrderRequest(
        client_order_id=cid, account="paper", symbol="BTC/USDT", side="buy", type=kind,
        amount=Decimal(1), price=Decimal(90) if kind == "limit" else None,
    )  # fmt: skip


async def test_an_order_placed_behind_its_back_is_a_divergence_flagged_with_an_alert(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(reconcile_interval_s=0.3)
    await market.client.place_order(_manual("manual-1"))

    async def divergences() -> list[object]:
        return [e.payload for e in await market.published("inspector.divergence")]

    await until(divergences)
    found = (await divergences())[0]
    assert (found.kind, found.key, found.local, found.action) == (
        "order", "manual-1", None, "flagged"
    )  # fmt: skip
    assert "open buy 1 BTC/USDT" in (found.remote or "")
    alerts = [e.payload.message for e in await market.published("inspector.alert")]
    assert any("manual-1" in a for a in alerts)
    reconciled = [e.payload for e in await market.published("inspector.reconciled")]
    assert any(r.divergences >= 1 for r in reconciled)
    assert inspector.store.order("manual-1") is None  # alert only: not taken over


async def test_the_stand_down_rule_stops_new_entries_after_a_divergence(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(reconcile_interval_s=0.3, divergence_order="stand_down")
    await market.client.place_order(_manual("manual-2"))
    await until(lambda: inspector.store.counters().stand_down_until_ms is not None)
    await market.decide()
    await until(lambda: market.published("inspector.verdict"))
    verdict = (await market.published("inspector.verdict"))[0].payload
    assert verdict.verdict == "STAND_DOWN"
    assert all(o.client_order_id == "manual-2" for o in await market.client.orders("paper"))


async def test_a_dry_run_lists_the_differences_and_what_each_rule_would_do_changing_nothing(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(divergence_order="adopt")
    await market.client.place_order(_manual("manual-3"))
    assert inspector.api_url is not None
    async with httpx.AsyncClient() as http:
        answer = (await http.post(inspector.api_url + "/api/v1/reconcile",
                                  json={"dry_run": True})).json()  # fmt: skip
    assert answer["dry_run"] is True
    [line] = [d for d in answer["differences"] if d["key"] == "manual-3"]
    assert line["rule"] == "adopt" and "take the provider's figure" in line["line"]
    assert inspector.store.order("manual-3") is None
    async with httpx.AsyncClient() as http:
        await http.post(inspector.api_url + "/api/v1/reconcile", json={"dry_run": False})
    adopted = inspector.store.order("manual-3")
    assert adopted is not None and adopted.adopted and adopted.status == "open"


async def test_a_position_found_at_start_is_legacy_alert_only_and_never_managed(
    market: Market, start_inspector: StartInspector
) -> None:
    await market.client.place_order(_manual("by-hand", "market"))
    inspector, _, _ = await start_inspector()
    legacy = inspector.store.position("BTC/USDT")
    assert legacy is not None and not legacy.runtime and legacy.size == Decimal(1)
    assert "legacy BTC/USDT" in inspector.log
    alerts = [e.payload for e in await market.published("inspector.alert")]
    assert any("legacy position" in a.message and a.subject == "BTC/USDT" for a in alerts)
    assert await market.published("inspector.divergence") == []
    assert await market.client.orders("paper", open_only=True) == []  # no protection placed
    view = inspector.positions_view()
    assert view[0]["managed"] == "legacy" and view[0]["protective"] == []


async def test_a_decision_on_a_symbol_held_as_a_legacy_position_is_blocked_and_the_row_kept(
    market: Market, start_inspector: StartInspector
) -> None:
    await market.client.place_order(_manual("by-hand", "market"))
    inspector, _, _ = await start_inspector()
    decision = await market.decide("BTC/USDT")

    async def verdicts() -> list[object]:
        return [
            e.payload for e in await market.published("inspector.verdict")
            if e.payload.decision_id == decision.id
        ]  # fmt: skip

    await until(verdicts)
    verdict = (await verdicts())[0]
    assert (verdict.verdict, verdict.policy) == ("BLOCK", "legacy_position")
    assert "did not open" in verdict.reason
    legacy = inspector.store.position("BTC/USDT")
    assert legacy is not None and not legacy.runtime and legacy.strategy == "legacy"
    assert legacy.size == Decimal(1) and legacy.decision_id is None
    placed = [o.client_order_id for o in await market.client.orders("paper")]
    assert placed == ["by-hand"]  # no entry, no guard


async def test_a_decision_on_another_symbol_than_the_legacy_position_still_trades(
    market: Market, start_inspector: StartInspector
) -> None:
    await market.client.place_order(_manual("by-hand", "market"))
    inspector, _, _ = await start_inspector()
    decision = await market.decide("ETH/USDT")
    await until(lambda: inspector.store.decision(decision.id).get("verdict") == "ALLOW")
    legacy = inspector.store.position("BTC/USDT")
    assert legacy is not None and not legacy.runtime and legacy.size == Decimal(1)


async def test_a_reconciliation_reads_the_live_orders_not_every_order_the_run_placed(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(divergence_order="adopt")
    await market.client.place_order(_manual("manual-open"))
    assert inspector.api_url is not None
    async with httpx.AsyncClient() as http:
        await http.post(inspector.api_url + "/api/v1/reconcile", json={"dry_run": False})
    adopted = inspector.store.order("manual-open")
    assert adopted is not None and adopted.status == "open"
    # the store now holds it closed while the provider holds it open: it is still the store's
    # order, never flagged as one placed behind the inspector's back
    inspector.store.save_order(replace(adopted, status="cancelled"))
    for i in range(6):  # filled at once: closed at the provider, never the inspector's
        await market.client.place_order(_manual(f"manual-filled-{i}", kind="market"))
    assert len(await market.client.orders("paper")) == 7
    async with httpx.AsyncClient() as http:
        answer = (await http.post(inspector.api_url + "/api/v1/reconcile",
                                  json={"dry_run": True})).json()  # fmt: skip
    assert answer["orders_checked"] == 1  # the open one; the six closed ones were not read
    assert [d["key"] for d in answer["differences"] if d["kind"] == "order"] == []


async def test_bfx_inspector_reconcile_with_no_inspector_reads_the_live_orders_not_every_one(
    market: Market,
) -> None:
    InspectorStore(market.settings.inspector_path).close()  # an inspector ran here once
    await market.client.place_order(_manual("manual-open"))
    for i in range(6):  # filled at once: closed at the provider, never the inspector's
        await market.client.place_order(_manual(f"manual-filled-{i}", kind="market"))
    assert len(await market.client.orders("paper")) == 7
    runner = CliRunner(env={"BFX_TOKEN": "t0ken", "BFX_PROVIDER_URL": market.url})
    nobody = f"http://127.0.0.1:{free_port()}"  # no inspector answers: the offline dry run
    args = ["--data-dir", str(market.settings.home), "inspector", "reconcile", "--dry-run"]
    result = await asyncio.to_thread(runner.invoke, app, [*args, "--json", "--url", nobody])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["dry_run"] is True
    assert answer["orders_checked"] == 1  # the open one; the six closed ones were not read
    assert [d["key"] for d in answer["differences"] if d["kind"] == "order"] == ["manual-open"]
