"""`paper diff`: a session's orders beside a backtest of its window, differences explained."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from barfinex_cli.errors import NotFound
from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest
from barfinex_cli.kernel.backtest.paper_diff import diff_session
from barfinex_cli.runtime.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
STRATEGY = ROOT / "strategies" / "trend_ema_adx.py"


@pytest.mark.slow
def test_an_injected_fill_price_is_the_one_difference_found_and_explained(tmp_path: Path) -> None:
    session = tmp_path / "session"
    recorded = backtest(
        load_settings(home=session, token="t0ken", log_level="ERROR"),
        PipelineSpec(strategies=(STRATEGY,), days=0.4, history=200),
    )
    entry = next(f for f in recorded.fills if f.reason == "entry")
    with sqlite3.connect(session / "audit.db") as db:
        rows = db.execute("SELECT id, body FROM events WHERE type = 'order.filled'").fetchall()
        (event_id, body), = [
            (i, b) for i, b in rows
            if json.loads(b)["payload"]["order"]["client_order_id"] == entry.order_id
        ]  # fmt: skip
        changed = json.loads(body)
        changed["payload"]["fill"]["price"] = str(round(entry.price * 1.001, 2))
        db.execute("UPDATE events SET body = ? WHERE id = ?", (json.dumps(changed), event_id))

    settings = load_settings(home=tmp_path / "home", token="t0ken", log_level="ERROR")
    report = diff_session(settings, session, PipelineSpec(strategies=(STRATEGY,), days=0.4))

    assert report.window.start_ms < report.window.end_ms
    kinds = [d.kind for d in report.differences]
    assert kinds.count("price") == 1 and report.same == len(kinds) - 1, kinds
    (found,) = [d for d in report.differences if d.kind == "price"]
    assert found.key.role == "entry" and found.key.side == entry.side
    assert found.backtest is not None and found.backtest.price == pytest.approx(entry.price)
    assert "+10.00 bps" in found.why


def test_a_directory_that_recorded_nothing_is_not_a_session(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", token="t0ken")
    with pytest.raises(NotFound, match=r"holds no audit\.db"):
        diff_session(settings, tmp_path / "nothing", PipelineSpec(strategies=(STRATEGY,)))


def test_bfx_paper_diff_of_a_directory_with_no_session_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env["BFX_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "paper", "diff", str(tmp_path / "nothing"),
         "--strategy", str(STRATEGY)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "holds no audit.db" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
