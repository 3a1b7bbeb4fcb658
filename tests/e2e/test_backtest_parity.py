"""The core property: `bfx up` on the real Redis stack and `bfx backtest` over the same replay.

One `bfx up` run (every role its own process, on Redis) and one pipeline backtest of the same
360 minutes of BTC/USDT from the synthetic market (295 of them history), as a candle file and
as the synthetic market itself with its books, with the same strategy, advisor settings and
default policies. Every detector signal, every advisor decision (its
signal, side, conviction, entry, stop and take-profit) and every order fill (time, symbol, side,
size, price and the order's role: entry, stop, take-profit) match. They match because `bfx up`
replays in lock-step, as the backtest does: the provider plays the next market moment only
once every role's consumer group on Redis has handled everything published (`Bus.behind`,
`bus.settle`), so an order reaches the paper broker on the moment of its signal however slow
the machine is (see docs/backtest.md, "Parity"). The replay runs at 1200x, far faster than
the roles answer on a loaded machine: without lock-step the orders met later candles.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from conftest import REDIS_URL
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = ROOT / "strategies" / "trend_ema_adx.py"
HISTORY, SPEED = "295", "1200"
"""Two entries (05:02 long, 05:45 short), each closed, in the 65 minutes played."""

pytestmark = pytest.mark.slow


def _candle_file(path: Path) -> None:
    """Write the synthetic market's first 360 BTC/USDT minutes as a candle file (no books)."""
    import polars as pl

    from barfinex_cli.market import synthetic

    rows = synthetic.default_dataset(
        ("BTC/USDT",), start_ms=synthetic.DEFAULT_START_MS, days=0.4, seed=7
    )["BTC/USDT"][:360]
    pl.DataFrame(
        {"timestamp": [r.open_ms for r in rows], "open": [float(r.open) for r in rows],
         "high": [float(r.high) for r in rows], "low": [float(r.low) for r in rows],
         "close": [float(r.close) for r in rows], "volume": [float(r.volume) for r in rows]}
    ).write_csv(path)  # fmt: skip


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
            (by_id[e.payload.signal_id].payload.candle_time, e.payload.symbol, e.payload.side,
             round(e.payload.conviction, 9), e.payload.entry, e.payload.stop,
             e.payload.take_profit)
            for e in decisions if source is None or source in e.source
        ),
        "orders": sorted(
            (e.payload.fill.time, e.payload.order.symbol, e.payload.order.side,
             e.payload.fill.amount, e.payload.fill.price,
             e.payload.order.client_order_id.rsplit("-", 1)[1])  # the order's role: e, sl1, tp1
            for e in fills if source is None or source in e.source
        ),
    }  # fmt: skip


@pytest.fixture(scope="module", params=["candle file", "synthetic market with books"])
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `bfx up` on Redis, then the backtest, over one window; return what each did.

    The same minutes twice: as a candle file (entries priced from the close), and as the
    synthetic market itself, which publishes a book at each close (entries priced from it: the
    advisor must wait for the book of the signal's moment).
    """
    if request.param == "candle file":
        data: Path | None = tmp_path_factory.mktemp("data")
        assert data is not None
        _candle_file(data / "BTCUSDT-1m.csv")
        source = ["--replay", str(data)]
    else:
        data = None
        source = ["--days", "0.25", "--symbols", "BTC/USDT"]  # the same 360 minutes
    up_home = tmp_path_factory.mktemp("up")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(BFX_HOME=str(up_home), BFX_NAMESPACE=f"parity-{os.getpid()}-{len(source)}",
               BFX_TOKEN="t0ken")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "up", "--strategy", str(STRATEGY), *source,
         "--speed", SPEED, "--history", HISTORY, "--redis-url", REDIS_URL, "--port",
         str(free_port()), "--json"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    bt_home = tmp_path_factory.mktemp("backtest")
    settings = load_settings(home=bt_home, token="t0ken", log_level="ERROR")
    spec = (
        PipelineSpec(strategies=(STRATEGY,), replay=data, history=int(HISTORY))
        if data is not None
        else PipelineSpec(
            strategies=(STRATEGY,), days=0.25, history=int(HISTORY), symbols=("BTC/USDT",)
        )
    )
    result = backtest(settings, spec)
    return _events(up_home / "audit.db"), _events(bt_home / "audit.db", result.run_id)


def test_bfx_up_on_redis_and_the_backtest_see_the_same_signals_and_make_the_same_decisions(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    up, bt = runs
    assert up["signals"] and up["signals"] == bt["signals"]
    assert up["decisions"] and up["decisions"] == bt["decisions"]


def test_bfx_up_on_redis_and_the_backtest_place_the_same_orders(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    up, bt = runs
    assert up["orders"] and up["orders"] == bt["orders"]
