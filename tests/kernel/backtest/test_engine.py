"""The full-pipeline backtest: the live roles on a lock-step replay, one run id per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.errors import BfxError, UsageError
from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest
from barfinex_cli.kernel.backtest.result import BacktestResult
from barfinex_cli.runtime.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = ROOT / "strategies" / "trend_ema_adx.py"
WINDOW = {"days": 0.4, "history": 200}
"""The synthetic market's first 576 minutes, 200 of them history: two entries, each closed."""


def _orders(result: BacktestResult) -> list[tuple[Any, ...]]:
    return [(f.time_ms, f.symbol, f.side, f.quantity, f.price, f.reason) for f in result.fills]


def _bfx(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env["BFX_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "barfinex_cli", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow
def test_fast_and_full_lockstep_runs_place_the_same_orders_and_bfx_trace_walks_to_the_candle(
    tmp_path: Path,
) -> None:
    settings = load_settings(home=tmp_path / "home", token="t0ken", log_level="ERROR")
    spec = PipelineSpec(strategies=(STRATEGY,), **WINDOW)  # type: ignore[arg-type]
    first = backtest(settings, spec)  # the fast path: waits only where an order can follow
    second = backtest(settings, replace(spec, fast=False))  # a wait on every moment

    assert first.mode == "pipeline" and first.run_id != second.run_id
    assert len(first.fills) >= 2 and {f.reason for f in first.fills} >= {"entry"}
    # a run starts from a fresh paper account: the same window gives the same orders, and the
    # fast path gives the orders of the full lock-step
    assert _orders(first) == _orders(second)
    assert len(first.trades) >= 1 and first.metrics.trades == len(first.trades)
    assert len(first.equity) == first.bars
    assert first.signals >= len({f.order_id for f in first.fills if f.reason == "entry"})
    assert (tmp_path / "home" / "backtests" / f"{first.run_id}.json").is_file()
    assert not (tmp_path / "home" / "backtests" / first.run_id).exists()  # scratch removed

    entry = next(f for f in second.fills if f.reason == "entry")
    assert entry.trace_id is not None
    shown = _bfx(tmp_path / "home", "trace", entry.order_id, "--json")  # the client order id
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)
    root = tree[0]["event"]
    assert root["type"] == "market.candle" and root["trace_id"] == entry.trace_id
    assert root["source"] == f"provider/{second.run_id}"
    chain: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        chain.append(node["event"]["type"])
        for child in node["children"]:
            walk(child)

    walk(tree[0])
    # candle -> signal -> the advisor's stages -> decision -> verdict -> the order's events
    assert chain.index("detector.signal") < chain.index("advisor.decision")
    assert chain.index("advisor.decision") < chain.index("inspector.verdict")
    assert chain.index("inspector.verdict") < chain.index("order.filled")


def test_a_missing_strategy_file_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", token="t0ken")
    with pytest.raises(UsageError, match="no strategy file"):
        backtest(settings, PipelineSpec(strategies=(tmp_path / "nope.py",), **WINDOW))  # type: ignore[arg-type]


@pytest.mark.parametrize(("fees", "slippage"), [(-1.0, None), (5000.0, None), (None, 1e9)])
def test_absurd_fees_or_slippage_are_one_line_usage_errors(
    tmp_path: Path, fees: float | None, slippage: float | None
) -> None:
    settings = load_settings(home=tmp_path / "home", token="t0ken")
    spec = PipelineSpec(strategies=(STRATEGY,), fees_bps=fees, slippage_bps=slippage)
    with pytest.raises(UsageError, match=r"^--(fees|slippage) .*basis points between 0 and 1000$"):
        backtest(settings, spec)


def test_a_broken_strategy_file_is_one_line_error_and_leaves_no_scratch(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("strategy = (\n")
    settings = load_settings(home=tmp_path / "home", token="t0ken", log_level="ERROR")
    with pytest.raises(BfxError) as caught:
        backtest(settings, PipelineSpec(strategies=(broken,), **WINDOW))  # type: ignore[arg-type]
    assert "\n" not in str(caught.value) and "broken.py" in str(caught.value)
    assert not any((tmp_path / "home" / "backtests").glob("bt-*/"))


def test_an_empty_replay_file_is_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "BTCUSDT-1m.csv"
    empty.write_text("open_time,open,high,low,close,volume\n")
    settings = load_settings(home=tmp_path / "home", token="t0ken", log_level="ERROR")
    with pytest.raises(BfxError) as caught:
        backtest(settings, PipelineSpec(strategies=(STRATEGY,), replay=empty, history=0))
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_signal_the_pre_pass_did_not_forecast_replays_the_run_with_every_wait(
    tmp_path: Path,
) -> None:
    # A strategy file that changes between the pre-pass and the detector's load (a file edited
    # while a run starts): the pre-pass reads another symbol and forecasts its moments, the
    # detector fires on BTC/USDT. The fast run must notice and play the window again, waiting
    # on every moment.
    counter = tmp_path / "loads"
    shifty = tmp_path / "shifty.py"
    shifty.write_text(
        STRATEGY.read_text()
        .replace(
            "strategy = Strategy(",
            f"from pathlib import Path as _P\n_c = _P({str(counter)!r})\n"
            "_n = int(_c.read_text()) if _c.exists() else 0\n_c.write_text(str(_n + 1))\n"
            "strategy = Strategy(",
        )
        .replace('symbols=["BTC/USDT"],', 'symbols=["ETH/USDT"] if _n == 0 else ["BTC/USDT"],')
    )
    settings = load_settings(home=tmp_path / "home", token="t0ken", log_level="ERROR")
    replayed = backtest(settings, PipelineSpec(strategies=(shifty,), **WINDOW))  # type: ignore[arg-type]
    full = backtest(
        settings,
        PipelineSpec(strategies=(STRATEGY,), fast=False, **WINDOW),  # type: ignore[arg-type]
    )
    assert int(counter.read_text()) == 3  # the pre-pass, the fast run, the replay
    assert replayed.fills and _orders(replayed) == _orders(full)
