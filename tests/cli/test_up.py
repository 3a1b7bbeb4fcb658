"""`bfx up`: the whole stack as supervised processes on an embedded Redis, to the replay's end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from barfinex_cli.store.audit import AuditStore
from cli.conftest import BfxRun
from ports import free_port


@pytest.mark.slow
def test_up_runs_every_role_on_an_embedded_redis_to_the_end_of_the_replay(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    result = bfx(
        "up", "--speed", "max", "--days", "0.4", "--history", "200", "--embedded-redis",
        "--port", str(free_port()), "--json", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["redis"] == "embedded"
    names = [r["name"] for r in summary["roles"]]
    assert names[:2] == ["recorder", "provider"] and any(n.startswith("detector:") for n in names)
    assert all(r["restarts"] == 0 and r["state"] == "stopped" for r in summary["roles"])
    live_minutes = int(0.4 * 1440) - 200
    assert summary["candles"] >= live_minutes * 3  # three synthetic symbols, every 1m candle
    assert summary["signals"] > 0
    home = Path(cli_env["BFX_HOME"])
    with AuditStore(home / "audit.db", read_only=True) as audit:
        signal = audit.query(["detector.signal"], limit=1)[0]
        chain = [e.type for e in audit.trace(signal.id)]
    assert chain[:2] == ["market.candle", "detector.signal"]  # bfx trace reaches the candle
    redis_left = subprocess.run(
        ["pgrep", "-f", f"--dir {home / 'redis'}"], capture_output=True, text=True
    )
    assert redis_left.stdout.strip() == ""  # the embedded Redis stopped with the stack
    assert (home / "redis" / "appendonly.aof").exists()


def test_up_refuses_an_unknown_role_in_one_line(bfx: BfxRun) -> None:
    result = bfx("up", "--roles", "detector,bogus")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --roles: unknown bogus — choose from advisor, detector, inspector, provider, "
        "recorder"
    ]
    assert sys.executable  # the run used this interpreter


@pytest.mark.slow
def test_up_single_process_runs_every_role_on_the_in_process_bus(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    result = bfx(
        "up", "--single-process", "--speed", "max", "--days", "0.4", "--history", "200",
        "--port", str(free_port()), "--json", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["redis"] == "none (in-process bus)"
    names = [r["name"] for r in summary["roles"]]
    assert {"recorder", "provider", "inspector"} <= set(names)
    assert any(n.startswith("advisor:") for n in names)
    assert summary["signals"] > 0 and summary["candles"] > 0
    assert sum(summary["verdicts"].values()) == summary["decisions"]  # every decision judged
    assert not (Path(cli_env["BFX_HOME"]) / "redis").exists()  # no Redis was started


@pytest.mark.slow
def test_a_role_killed_mid_run_is_restarted_and_no_signal_is_handled_twice(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    import os
    import signal
    import time

    strategy = tmp_path / "killed_trend.py"
    strategy.write_text((Path(__file__).resolve().parents[2] / "strategies" / "trend_ema_adx.py")
                        .read_text())  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", "up", "--strategy", str(strategy),
         "--speed", "1200", "--days", "0.6", "--history", "300", "--embedded-redis",
         "--port", str(free_port()), "--json"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pid = None
        for _ in range(600):  # wait until the detector runs, then kill it hard
            found = subprocess.run(
                ["pgrep", "-f", f"detector run {strategy}"], capture_output=True, text=True
            ).stdout.split()
            if found:
                pid = int(found[0])
                break
            time.sleep(0.1)
        assert pid is not None, "the detector never started"
        time.sleep(3)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    detector = next(r for r in summary["roles"] if r["name"] == "detector:killed_trend")
    assert detector["restarts"] >= 1 and -9 in detector["exit_codes"]
    with AuditStore(Path(cli_env["BFX_HOME"]) / "audit.db", read_only=True) as audit:
        signals = audit.query(["detector.signal"], limit=None)
        outcomes = audit.query(["advisor.decision", "advisor.signal.dropped"], limit=None)
    candles = [(s.payload.symbol, s.payload.candle_time) for s in signals]
    assert len(candles) == len(set(candles))  # no candle signalled twice across the restart
    handled = [o.parent_id for o in outcomes]
    assert len(handled) == len(set(handled))  # no signal decided twice
