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


def test_up_refuses_a_broken_policy_or_strategy_file_before_starting_any_role(
    bfx: BfxRun, tmp_path: Path
) -> None:
    # found by an audit: the roles started, the inspector (or detector) died on its file and was
    # restarted in a loop, no candle was played, and `bfx up --for 30s` exited 0 with the reason
    # only in the role's log
    policy = tmp_path / "policies.toml"
    policy.write_text('[risk]\nper_trade_pct = "one"\n')
    strategy = tmp_path / "broken.py"
    strategy.write_text("this is not python(\n")
    port = str(free_port())
    bad_policy = bfx("up", "--policy", str(policy), "--port", port, "--for", "30s")
    bad_strategy = bfx("up", "--strategy", str(strategy), "--port", port, "--for", "30s")
    missing = bfx("up", "--policy", str(tmp_path / "nope.toml"), "--port", port, "--for", "30s")
    assert bad_policy.returncode == 1
    assert bad_policy.stderr.strip().splitlines() == [
        f"error: {policy}: key 'risk.per_trade_pct': Input should be a valid decimal"
    ]
    assert bad_strategy.returncode == 1
    [line] = bad_strategy.stderr.strip().splitlines()
    assert line.startswith(f"error: {strategy}:1:") and "Traceback" not in line
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: no policy file at ")
    assert not (tmp_path / "home" / "audit.db").exists()  # no role was started


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
