"""KPIs, fill audits and verdict figures on the running inspector (issue 10, group K gaps).

Each test drives the provider's paper broker and reads what the inspector publishes or answers
on `/kpi`: fees of an order filled as it was placed, both latencies, the drawdown limits, every
configured policy's state, suppression by stage kept across a restart, the figures a verdict
carries, a refused entry, capital reserved by a resting entry and the break-even move.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.contracts.advisor import (
    DecisionRejected,
    QualityBlocked,
    SignalDropped,
    SignalReceived,
)
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.inspector import VerdictIssued
from barfinex_cli.inspector.service import Inspector
from inspector.conftest import Market, StartInspector, armed, until


def policy_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text("[risk]\nper_trade_pct = 1\n\n" + text)
    return path


async def kpi_of(inspector: Inspector) -> dict[str, Any]:
    assert inspector.api_url is not None
    async with httpx.AsyncClient(base_url=inspector.api_url) as http:
        answer: dict[str, Any] = (await http.get("/kpi")).json()
    return answer


async def payloads(market: Market, pattern: str) -> list[Any]:
    return [e.payload for e in await market.published(pattern)]


async def test_an_entry_filled_as_it_was_placed_is_audited_with_the_fee_of_its_fill(
    market: Market, start_inspector: StartInspector
) -> None:
    await start_inspector()
    decision = await market.decide()
    entry_id = f"i-{decision.id}-e"

    async def audit() -> Any:
        return next((a for a in await payloads(market, "inspector.fill_audit")
                     if a.order_id == entry_id), None)  # fmt: skip

    await until(audit)
    audited = await audit()
    fills = [e.payload for e in await market.published("order.*filled")]
    fees = sum((f.fill.fee for f in fills if f.order.client_order_id == entry_id), Decimal(0))
    assert fees > 0 and audited.fees == fees  # was "0": audited from the REST answer
    assert audited.fill_rate == 1.0 and audited.latency_ms >= 0
    assert audited.wall_latency_ms is not None and audited.wall_latency_ms >= 0
    audits = [a for a in await payloads(market, "inspector.fill_audit") if a.order_id == entry_id]
    assert len(audits) == 1


async def test_the_kpis_give_the_drawdown_limits_beside_the_figures_and_every_policy_state(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    text = (
        "[drawdown]\nfrom_peak_pct = 10\ndaily_loss_pct = 3\n\n"
        "[activity]\nmax_trades_per_day = 5\nmax_loss_streak = 4\n\n"
        "[cooldown]\nafter_loss_minutes = 30\n\n[exposure]\nmax_leverage = 3\n"
    )
    inspector, _, _ = await start_inspector(policy=policy_file(tmp_path, text))
    kpi = await kpi_of(inspector)
    assert kpi["drawdown_limit"] == 0.1 and kpi["daily_loss_limit"] == 0.03  # were null
    assert kpi["drawdown"] == 0.0 and kpi["daily_loss"] == 0.0
    states = kpi["policies"]
    assert states["peak_drawdown"] == "ok: 0.00% below the peak of from_peak_pct 10%"
    assert states["daily_loss"] == "ok: down 0.00% today of daily_loss_pct 3%"
    assert states["trades_per_day"] == "ok: 0 trades today of max_trades_per_day 5"
    assert states["loss_streak"] == "ok: 0 losing in a row of max_loss_streak 4"
    assert states["cooldown"] == "ok: no loss yet; after_loss_minutes 30"
    assert states["leverage"] == "ok: 0.00x of max_leverage 3x"
    assert states["stand_down"] == "ok"
    assert states["risk_per_trade"] == "ok: judged per entry, per_trade_pct 1%"
    home = ["--data-dir", str(market.settings.home)]
    args = [*home, "inspector", "status", "--url", inspector.api_url or ""]
    status = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert status.exit_code == 0, status.output
    assert "drawdown 0.00% from the peak (limit 10.00%), 0.00% today (limit 3.00%)" in status.stdout
    assert "policy trades_per_day: ok: 0 trades today of max_trades_per_day 5" in status.stdout

    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.candle("BTC/USDT", 99, 99, 97, 97.5)  # the stop at 98 fills: a loss
    await until(lambda: inspector.store.counters().losses == 1)
    states = (await kpi_of(inspector))["policies"]
    # an active cooldown showed as {"stand_down": "ok"} alone before
    assert states["cooldown"].startswith("THROTTLE until ")
    assert "cooling down after a loss" in states["cooldown"]
    assert states["trades_per_day"] == "ok: 1 trades today of max_trades_per_day 5"
    assert states["loss_streak"] == "ok: 1 losing in a row of max_loss_streak 4"
    assert states["stand_down"] == "ok"


async def test_signals_stopped_at_any_advisor_stage_count_once_per_strategy_across_a_restart(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, stop, task = await start_inspector()
    bus = market.bus
    for signal, strategy in (("s1", "momentum"), ("s2", "breakout")):
        received = SignalReceived(signal_id=signal, strategy=strategy, exchange="replay",
                                  symbol="BTC/USDT", direction="long", score=2.0)  # fmt: skip
        await bus.publish(make_event(received, source="advisor/advisor"))
    # s1: the quality stage blocks, and the run's rejection names the same stage: one count
    blocked = QualityBlocked(signal_id="s1", quality=0.2, threshold=0.6,
                             components={"staleness": 0.2}, reason="stale")  # fmt: skip
    await bus.publish(make_event(blocked, source="advisor/advisor"))
    rejected = DecisionRejected(signal_id="s1", stage="quality", reason="stale")
    await bus.publish(make_event(rejected, source="advisor/advisor"))
    # s2: rejected at the conviction stage (no .blocked event exists for it)
    low = DecisionRejected(signal_id="s2", stage="conviction", reason="conviction 0.2 < 0.5")
    await bus.publish(make_event(low, source="advisor/advisor"))
    # a detector signal the advisor drops at intake: its strategy comes from the detector
    detected = SignalGenerated(
        strategy="momentum", instance="momentum", exchange="replay", symbol="XRP/USDT",
        timeframe="1m", candle_time=datetime(2024, 1, 1, tzinfo=UTC), direction="long",
        score=2.0, threshold=1.0, attribution=[],
    )  # fmt: skip
    generated = make_event(detected, source="detector/momentum")
    await bus.publish(generated)
    dropped = SignalDropped(signal_id=generated.id, reason="unknown_symbol")
    await bus.publish(make_event(dropped, source="advisor/advisor"))
    await market.decide(stop="0")  # a policy blocks it

    expected = {
        "momentum": {"stage:quality": 1, "stage:intake": 1, "policy:risk_per_trade": 1},
        "breakout": {"stage:conviction": 1},
    }

    async def counts() -> dict[str, Any]:
        strategies = (await kpi_of(inspector))["strategies"]
        return {name: s["blocked"] for name, s in strategies.items() if s["blocked"]}

    async def settled() -> bool:
        return await counts() == expected

    await until(settled)
    stop.set()
    await task
    inspector, _, _ = await start_inspector()  # the same data dir: the same inspector.db
    assert await counts() == expected  # counted in memory before, lost on a restart
    assert (await kpi_of(inspector))["strategies"]["momentum"]["decisions"] == 1


async def test_a_verdict_carries_the_figures_of_the_policy_that_made_it(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    text = "[activity]\nmax_trades_per_day = 1\n"
    inspector, _, _ = await start_inspector(policy=policy_file(tmp_path, text))
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.decide(symbol="ETH/USDT", entry="50", stop="49", take_profit="52")
    await until(lambda: inspector.verdicts == 2)
    verdicts = await payloads(market, "inspector.verdict")
    throttled = verdicts[-1]
    assert (throttled.verdict, throttled.policy) == ("THROTTLE", "trades_per_day")
    assert throttled.figures == {"trades_today": 1, "max_trades_per_day": 1}
    assert "trades_today=1" in throttled.reason  # the text keeps them too


def test_a_verdict_recorded_before_figures_were_kept_still_decodes() -> None:
    old = {"decision_id": "d1", "verdict": "BLOCK", "policy": "spread", "reason": "wide"}
    assert VerdictIssued.model_validate(old).figures == {}


async def test_an_entry_the_provider_refuses_is_no_trade_today_and_raises_an_alert(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    # the paper broker has no price of XRP/USDT: it refuses the order (an order.rejected)
    decision = await market.decide(
        symbol="XRP/USDT", entry="0.5", stop="0.49", take_profit="0.52", size_hint="100"
    )
    entry_id = f"i-{decision.id}-e"
    await until(lambda: (o := inspector.store.order(entry_id)) is not None and not o.live)
    order = inspector.store.order(entry_id)
    assert order is not None and order.status == "rejected"

    async def alerted() -> list[Any]:
        return [a for a in await payloads(market, "inspector.alert") if entry_id in a.message]

    await until(alerted)
    assert "refused by the provider" in (await alerted())[0].message
    assert inspector.store.counters().trades_today == 0  # was 1
    assert (await kpi_of(inspector))["trades"] == 0


async def test_a_resting_limit_entry_reserves_its_notional_for_its_strategy(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    decision = await market.decide(
        order_type="limit", entry="95", stop="93", take_profit="99", strategy="breakout"
    )
    entry_id = f"i-{decision.id}-e"
    await until(lambda: (o := inspector.store.order(entry_id)) is not None and o.status == "open")
    order = inspector.store.order(entry_id)
    assert order is not None and order.amount > 0
    capital = (await kpi_of(inspector))["strategies"]["breakout"]
    assert Decimal(capital["reserved"]) == order.amount * Decimal(95)
    assert Decimal(capital["in_positions"]) == 0 and capital["utilisation"] > 0


async def test_the_stop_moves_to_break_even_once_the_price_went_the_risk_in_favour(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(breakeven_at_r=1.0)
    await market.decide()  # entry ~100, stop 98: one risk unit is ~2
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.candle("BTC/USDT", 100, 101, 99.8, 100.9)  # less than one risk: nothing
    await market.candle("BTC/USDT", 100.9, 102.5, 100.8, 102.3)  # past one risk: break-even

    await until(lambda: payloads(market, "inspector.protective.moved"))
    moved = (await payloads(market, "inspector.protective.moved"))[0]
    position = inspector.store.position("BTC/USDT")
    assert position is not None and position.status == "open"
    assert (moved.kind, moved.reason) == ("stop_loss", "break-even")
    assert moved.previous_price == Decimal(98) and moved.price == position.entry
    assert position.stop == position.entry
    stop_order = inspector.store.order(position.stop_order or "")
    assert stop_order is not None and stop_order.stop_price == position.entry
    assert stop_order.status in ("in_flight", "open")
