"""Screens 3-5 against the advisor and inspector on the kernel's in-process stack.

One replay runs the provider (gateway on a loopback port), a momentum detector, the advisor and
the inspector (each serving its API and registered, so the studio reaches them through the
provider's `/proxy`). The studio starts first and waits for the gateway, so it sees the live
part of the replay; at the end each screen's cells are checked against what the roles' own
APIs answer (their stores).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from textual.widgets import DataTable, Static

from barfinex_cli.inspector.policies import default_policy_path
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.kernel.stack import run_in_process
from barfinex_cli.runtime.config import (
    AdvisorConfig,
    DetectorConfig,
    InspectorConfig,
    ProviderConfig,
)
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.studio.app import StudioApp
from barfinex_cli.studio.screens.decisions import DecisionsScreen
from barfinex_cli.studio.screens.risk import RiskScreen
from studio.stack import TOKEN, free_port, until
from studio.test_app import FEED, SIZE, cells

MOMENTUM = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="momentum", symbols=["BTC/USDT"], timeframe="1m", threshold=2.0, cooldown=2,
    rules=[
        Rule("above_ema", ta.close > ta.ema("close", 10), weight=1.0, direction="long"),
        Rule("below_ema", ta.close < ta.ema("close", 10), weight=1.0, direction="short"),
        Rule("rsi_up", ta.rsi(7) > 55, weight=1.0, direction="long"),
        Rule("rsi_down", ta.rsi(7) < 45, weight=1.0, direction="short"),
    ],
)
"""


async def test_decisions_risk_and_capital_show_what_the_advisor_and_inspector_hold(
    tmp_path: Path, namespace: str
) -> None:
    strategy = tmp_path / "momentum.py"
    strategy.write_text(MOMENTUM)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token=TOKEN,
                             provider_url=url)  # fmt: skip
    provider = ProviderConfig(
        symbols=("BTC/USDT",), timeframes=("1m",), days=0.15, history=120, speed=1200,
        port=port, exit_at_end=False, health_interval_s=0.5,
    )  # fmt: skip
    detector = DetectorConfig(strategy=strategy, instance="m", serve_health=False,
                              join_registry=False)  # fmt: skip
    advisor = AdvisorConfig(port=free_port(), heartbeat_s=0.5)
    # The packaged policies without the limits that stand down after losing trades: how many
    # stops this replay hits depends on timing, and the Risk screen is checked standing down
    # and resuming by hand from a state that is not stood down.
    policy = tmp_path / "policies.toml"
    lifted = ("max_loss_streak", "max_losing_trades_per_day", "daily_loss_pct")
    policy.write_text("\n".join(line for line in default_policy_path().read_text().splitlines()
                                if not line.startswith(lifted)))  # fmt: skip
    inspector = InspectorConfig(port=free_port(), heartbeat_s=0.5, kpi_interval_s=0.5,
                                policy=policy)  # fmt: skip
    app = StudioApp(url, TOKEN, poll_s=0.5, feed_options=FEED)
    stop = asyncio.Event()
    async with Kernel(settings) as kernel, app.run_test(size=SIZE) as pilot:
        stack = asyncio.create_task(
            run_in_process(kernel, provider, [detector], stop, record=False,
                           advisor_configs=[advisor], inspector_configs=[inspector])
        )  # fmt: skip
        try:
            await until(lambda: _running(stack) and app.state.connection.state == "connected",
                        timeout=30)  # fmt: skip
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=url, timeout=5, headers=auth) as http:
                await _wait_replay(http, stack)
                status = await _settled(http)
                decisions = (await http.get("/proxy/advisor/api/v1/decisions?limit=200")).json()
            rows = decisions["decisions"]
            assert rows, "the replay made no advisor outcome"
            await until(lambda: app.state.inspector.app == "inspector"
                        and len(app.state.decisions) >= len(rows), timeout=15)  # fmt: skip

            await pilot.press("3")
            screen = app.screen
            assert isinstance(screen, DecisionsScreen)
            table = screen.query_one("#decisions", DataTable)
            await until(lambda: table.row_count >= len(rows))
            shown = {r[1:3] and (r[1], r[2]) for r in cells(table)}
            wanted = {(r["symbol"], "decision" if r["type"] == "advisor.decision"
                       else "rejected" if r.get("stage") else "dropped")
                      for r in rows}  # fmt: skip
            assert wanted <= shown
            table.focus()
            await pilot.press("home")
            stages = screen.query_one("#stages", DataTable)
            await until(lambda: stages.row_count > 0, timeout=10)
            first = cells(stages)[0]
            assert first[0] == "context" and first[1] in ("passed", "blocked", "skipped")
            summary = str(screen.query_one("#summary", Static).render())
            assert "conviction  raw" in summary and "LLM" in summary and "regime" in summary

            await pilot.press("4")
            risk = app.screen
            assert isinstance(risk, RiskScreen)
            policies = {r[0]: r[1] for r in cells(risk.query_one("#policies", DataTable))}
            assert policies.get("stand_down") == "ok"
            kpi_text = str(risk.query_one("#kpi", Static).render())
            assert "account paper" in kpi_text and "equity" in kpi_text and "drawdown" in kpi_text
            # the inspector manages every position the broker holds, at the broker's size (a
            # strategy that adds to a position used to leave a remainder the store had closed)
            async with httpx.AsyncClient(base_url=url, timeout=5, headers=auth) as http:
                raw = (await http.get("/api/v1/positions")).json()["positions"]
            broker = sorted((p["symbol"], p["side"], Decimal(p["size"]))
                            for p in raw if Decimal(p["size"]))  # fmt: skip
            managed = sorted((p["symbol"], p["side"], Decimal(p["size"]))
                             for p in status["positions"])  # fmt: skip
            assert managed == broker
            table = risk.query_one("#positions", DataTable)
            wanted_rows = sorted([p["symbol"], p["side"], p["size"], p["entry"]]
                                 for p in status["positions"])  # fmt: skip
            await until(lambda: sorted(r[:4] for r in cells(table)) == wanted_rows, timeout=5)
            assert all(row[8] != "— (inspector does not manage it)" for row in cells(table))
            verdicts = risk.query_one("#verdicts", DataTable)
            assert verdicts.row_count == len(app.state.verdicts)

            # the only write: stand down behind a confirmation, then resume
            await pilot.press("s")
            await until(lambda: type(app.screen).__name__ == "ConfirmScreen")
            await pilot.press("y")
            await until(lambda: "STAND_DOWN" in _policy(app), timeout=10)
            await pilot.press("r")
            await until(lambda: type(app.screen).__name__ == "ConfirmScreen")
            await pilot.press("n")  # refused: still stood down
            await pilot.pause(0.6)
            assert "STAND_DOWN" in _policy(app)
            await pilot.press("r")
            await until(lambda: type(app.screen).__name__ == "ConfirmScreen")
            await pilot.press("y")
            await until(lambda: _policy(app) == "ok", timeout=10)

            await pilot.press("5")
            capital = app.screen
            bars = str(capital.query_one("#bars", Static).render())
            kpi = app.state.kpi
            assert kpi is not None
            table = capital.query_one("#capital", DataTable)
            if kpi.strategies:
                assert [r[0] for r in cells(table)] == sorted(kpi.strategies)
                assert "utilisation of equity" in bars
            else:
                assert "No capital figures" in bars
        finally:
            stop.set()
            await asyncio.wait_for(stack, 60)


def _policy(app: StudioApp) -> str:
    states: dict[str, Any] = app.state.inspector.data.get("policies") or {}
    return str(states.get("stand_down", ""))


async def _settled(http: httpx.AsyncClient) -> dict[str, Any]:
    """Return the inspector's status once two reads half a second apart agree (work drained)."""
    last: dict[str, Any] | None = None
    for _ in range(60):
        status = (await http.get("/proxy/inspector/api/v1/status")).json()
        now = {"positions": status["positions"], "verdicts": status["health"]["verdicts"]}
        if now == last:
            return dict(status)
        last = now
        await asyncio.sleep(0.5)
    raise AssertionError("the inspector kept changing")


def _running(stack: asyncio.Task[Any]) -> bool:
    """Return True while the stack runs; raise what ended it, so a failed start fails fast."""
    if stack.done():
        stack.result()
        raise AssertionError("the stack ended early")
    return True


async def _wait_replay(http: httpx.AsyncClient, stack: asyncio.Task[Any]) -> None:
    for _ in range(1500):
        _running(stack)
        health = (await http.get("/api/v1/health")).json()
        apps = (await http.get("/api/v1/apps")).json()["apps"]
        if health.get("replay_done") and {"advisor", "inspector"} <= {a["role"] for a in apps}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replay did not finish")
