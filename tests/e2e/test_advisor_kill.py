"""`bfx up` on Redis with the advisor killed by SIGKILL mid-run: the supervisor restarts it, it
takes back the signals it had read but not finished, and at the end every signal got exactly one
outcome and no order was sent twice (read from the audit store)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from barfinex_cli.store.audit import AuditStore
from conftest import REDIS_URL
from e2e.helpers import OUTCOMES, delete_namespace
from ports import free_port
from strategy_files import momentum

STRATEGY = momentum("momentum_kill", symbols=("BTC/USDT", "ETH/USDT"), cooldown=5)


@pytest.fixture
def env(tmp_path: Path, namespace: str) -> Iterator[dict[str, str]]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    values.update(BFX_HOME=str(tmp_path / "home"), BFX_NAMESPACE=namespace,
                  BFX_REDIS_URL=REDIS_URL)  # fmt: skip
    yield values
    delete_namespace(namespace)


def _decisions(audit_path: Path) -> int:
    if not audit_path.is_file():
        return 0
    try:
        with AuditStore(audit_path, read_only=True) as audit:
            return int(dict(audit.types()).get("advisor.decision", 0))
    except Exception:  # the recorder is creating it
        return 0


def _advisor_pid(up_pid: int) -> int | None:
    found = subprocess.run(
        ["pgrep", "-P", str(up_pid), "-f", "barfinex_cli advisor run"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return int(found[0]) if found else None


@pytest.mark.slow
# 55-60 s alone; in a loaded e2e run the stack took over 95 s after the kill and the global
# 120 s cut it off without a word: its own waits (90 s, then 120 s) say which step is stuck
@pytest.mark.timeout(300)
def test_the_advisor_killed_mid_run_is_restarted_and_every_signal_gets_one_outcome(
    env: dict[str, str], tmp_path: Path
) -> None:
    strategy = tmp_path / "momentum_kill.py"
    strategy.write_text(STRATEGY)
    audit_path = Path(env["BFX_HOME"]) / "audit.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", "up", "--strategy", str(strategy),
         "--speed", "1200", "--days", "0.2", "--history", "120", "--symbols", "BTC/USDT,ETH/USDT",
         "--redis-url", REDIS_URL, "--port", str(free_port()), "--json"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while _decisions(audit_path) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        pid = _advisor_pid(proc.pid)
        assert pid is not None and _decisions(audit_path) >= 3, "the advisor never decided"
        os.kill(pid, signal.SIGKILL)
        killed_us = time.time_ns() // 1000
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    advisor = next(r for r in summary["roles"] if r["name"] == "advisor")
    assert advisor["restarts"] >= 1 and -9 in advisor["exit_codes"]
    with AuditStore(audit_path, read_only=True) as audit:
        signals = audit.query(["detector.signal"], limit=None)
        outcomes = audit.query(OUTCOMES, limit=None)
        verdicts = audit.query(["inspector.verdict"], limit=None)
        orders = audit.query(["order.submitted"], limit=None)
    with sqlite3.connect(audit_path) as db:
        (after,) = db.execute(
            "SELECT count(*) FROM events WHERE type = 'advisor.decision' AND recorded_us > ?",
            (killed_us,),
        ).fetchone()
    assert after > 0  # the restarted advisor went on deciding
    assert sorted(o.parent_id or "" for o in outcomes) == sorted(s.id for s in signals)
    decisions = [o for o in outcomes if o.type == "advisor.decision"]
    assert sorted(v.payload.decision_id for v in verdicts) == sorted(d.id for d in decisions)
    ids = [o.payload.order.client_order_id for o in orders]
    assert len(ids) == len(set(ids))
    entries = [o.payload.order.decision_id for o in orders if o.payload.order.client_order_id
               .endswith("-e")]  # fmt: skip
    assert len(entries) == len(set(entries))
