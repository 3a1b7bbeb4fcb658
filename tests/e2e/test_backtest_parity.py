"""The core property: `bfx up` on the real Redis stack and `bfx backtest` over the same replay.

One `bfx up` run (every role its own process, on Redis) and one pipeline backtest of the same
synthetic window, strategy, advisor settings and default policies. What must match and does:
every detector signal, and every advisor decision (its signal, side and conviction). What must
match and does not yet: the orders' prices and times (see docs/backtest.md, "Parity"): on the
multi-process stack the advisor prices an entry from the book it holds when the signal arrives,
which at replay speed is often the book of the moment before (the signal's own book is still on
its way on another stream), and the inspector places the order one or more replayed minutes
later. The backtest plays each moment only once the roles have finished the last one, so it
prices from the signal's own moment. The strict xfail keeps that gap visible until it closes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = ROOT / "strategies" / "trend_ema_adx.py"
DAYS, HISTORY, SPEED = "0.4", "200", "1200"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(audit: Path, source: str | None = None) -> dict[str, list[Any]]:
    with AuditStore(audit, read_only=True) as store:
        signals = store.query(["detector.signal"], limit=None)
        decisions = store.query(["advisor.decision"], limit=None)
        fills = store.query(["order.filled", "order.partially_filled"], limit=None)
    by_id = {e.id: e for e in signals}
    return {
        "signals": sorted(
            (e.payload.instance, e.payload.symbol, e.payload.candle_time, e.payload.direction,
             e.payload.action, e.payload.score) for e in signals
        ),
        "decisions": sorted(
            (by_id[e.parent_id].payload.candle_time if e.parent_id in by_id else None,
             e.payload.symbol, e.payload.side, round(e.payload.conviction, 9))
            for e in decisions if source is None or source in e.source
        ),
        "orders": sorted(
            (e.payload.fill.time, e.payload.order.symbol, e.payload.order.side,
             e.payload.fill.amount, e.payload.fill.price, e.payload.order.client_order_id[-3:])
            for e in fills if source is None or source in e.source
        ),
    }  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `bfx up` on Redis, then the backtest, over one window; return what each did."""
    up_home = tmp_path_factory.mktemp("up")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(BFX_HOME=str(up_home), BFX_NAMESPACE=f"parity-{os.getpid()}", BFX_TOKEN="t0ken")
    done = subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "up", "--strategy", str(STRATEGY), "--speed",
         SPEED, "--days", DAYS, "--history", HISTORY, "--redis-url", REDIS_URL, "--port",
         str(_free_port()), "--json"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    bt_home = tmp_path_factory.mktemp("backtest")
    settings = load_settings(home=bt_home, token="t0ken", log_level="ERROR")
    result = backtest(
        settings,
        PipelineSpec(strategies=(STRATEGY,), days=float(DAYS), history=int(HISTORY)),
    )
    return _events(up_home / "audit.db"), _events(bt_home / "audit.db", result.run_id)


def test_bfx_up_on_redis_and_the_backtest_see_the_same_signals_and_make_the_same_decisions(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    up, bt = runs
    assert up["signals"] and up["signals"] == bt["signals"]
    assert up["decisions"] and up["decisions"] == bt["decisions"]


@pytest.mark.xfail(
    strict=True,
    reason="bfx up prices entries from the book the advisor holds when the signal arrives "
    "(often the previous moment's) and places them replayed minutes late; see the module doc",
)
def test_bfx_up_on_redis_and_the_backtest_place_the_same_orders(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    up, bt = runs
    assert up["orders"] == bt["orders"]
