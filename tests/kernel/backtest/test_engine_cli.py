"""`bfx backtest` runs the full pipeline by default; its mistakes are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = str(ROOT / "strategies" / "trend_ema_adx.py")


def _bfx(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env["BFX_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "barfinex_cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_backtest_json_is_a_pipeline_run_with_a_run_id_and_nothing_but_data_on_stdout(
    tmp_path: Path,
) -> None:
    done = _bfx(tmp_path, "backtest", STRATEGY, "--days", "0.4", "--history", "200", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "pipeline" and report["run_id"].startswith("bt-")
    assert report["bars"] == 376 and report["metrics"]["trades"] >= 1
    assert "signal dropped" not in done.stderr  # the roles' per-signal warnings stay off
    assert (tmp_path / "backtests" / f"{report['run_id']}.json").is_file()


@pytest.mark.slow
def test_a_pipeline_run_draws_the_charts_and_titles_only_the_strategys_symbols(
    tmp_path: Path,
) -> None:
    done = _bfx(tmp_path, "backtest", STRATEGY, "--days", "0.4", "--history", "200")
    assert done.returncode == 0, done.stderr
    title = done.stdout.splitlines()[0]  # a BTC-only strategy on the 3-symbol synthetic market
    assert title.startswith("trend_ema_adx · BTC/USDT 1m on synthetic"), title
    assert "ETH/USDT" not in title and "SOL/USDT" not in title
    assert "drawdown %" in done.stdout and "┤" in done.stdout  # the equity and drawdown charts


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--from", "2030-01-01"], 2, "nothing to play"),
        (["--exchange", "synthetic", "--symbol", "BTC/USDT"], 2, "use --detector-only"),
        (["--folds", "0"], 2, "--folds"),
    ],
)
def test_a_pipeline_mistake_is_one_line_with_its_exit_code(
    tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    done = _bfx(tmp_path, "backtest", STRATEGY, "--days", "0.2", *args)
    assert done.returncode == code, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
