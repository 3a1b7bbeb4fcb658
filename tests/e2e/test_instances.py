"""Several detector instances as real processes beside a real provider: one dying never stops
another, and each instance's signals trace back to the candles that fired them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from barfinex_cli.store.audit import AuditStore
from conftest import REDIS_URL
from polling import wait_until
from ports import free_port
from strategy_files import momentum

STRATEGY = momentum("momentum_e2e", cooldown=1)


@pytest.fixture
def env(tmp_path: Path, namespace: str) -> Iterator[dict[str, str]]:
    port = free_port()
    values = {
        "BFX_HOME": str(tmp_path / "home"), "BFX_NAMESPACE": namespace,
        "BFX_REDIS_URL": REDIS_URL, "BFX_TOKEN": "e2e-token",
        "BFX_PROVIDER_URL": f"http://127.0.0.1:{port}", "PATH": os.environ.get("PATH", ""),
    }  # fmt: skip
    yield values
    subprocess.run(
        [sys.executable, "-c", "import asyncio; from barfinex_cli.bus.redis_streams import "
         f"RedisStreamsBus as B; b=B({REDIS_URL!r}, {namespace!r}); "
         "asyncio.run(b.delete_namespace()); asyncio.run(b.close())"],
        check=False, timeout=30,
    )  # fmt: skip


def _bfx(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", "--log-json", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _signals(env: dict[str, str], source: str) -> list[dict[str, object]]:
    """Return the signals of `source` the provider's recorder holds, as JSON, oldest first.

    Read from audit.db in this process: polling through `bfx events query` started a Python
    process per look (the CLI's query is exercised once, below, with --newest).
    """
    path = Path(env["BFX_HOME"]) / "audit.db"
    if not path.exists():
        return []
    with AuditStore(path, read_only=True) as audit:
        found = audit.query(["detector.signal"], source=source, limit=None)
    payloads = [e.payload.model_dump(mode="json") for e in found]
    return sorted(payloads, key=lambda p: str(p["candle_time"]))


def _signal_count(env: dict[str, str], source: str) -> int:
    return len(_signals(env, source))


def _interrupt(procs: list[subprocess.Popen[str]]) -> None:
    """Stop what still runs with SIGINT, newest first, as Ctrl-C would; kill what hangs."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in reversed(procs):
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_killing_one_instance_leaves_the_other_running(env: dict[str, str], tmp_path: Path) -> None:
    strategy = tmp_path / "momentum.py"
    strategy.write_text(STRATEGY)
    port = env["BFX_PROVIDER_URL"].rsplit(":", 1)[1]
    provider = _bfx(env, "provider", "start", "--speed", "300", "--days", "1", "--history", "300",
                    "--symbols", "BTC/USDT", "--timeframes", "1m,5m", "--port", port)  # fmt: skip
    procs = [provider]
    try:
        base = env["BFX_PROVIDER_URL"]
        headers = {"Authorization": "Bearer e2e-token"}
        wait_until(
            lambda: httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200,
            ignoring=(httpx.HTTPError,),
        )
        a = _bfx(env, "detector", "run", str(strategy), "--instance", "a", "--port", "0")
        b = _bfx(env, "detector", "run", str(strategy), "--instance", "b", "--port", "0")
        procs += [a, b]

        def both_alive() -> bool:
            apps = httpx.get(f"{base}/api/v1/apps", headers=headers, timeout=2).json()["apps"]
            return {x["name"] for x in apps if x["status"] == "alive"} >= {"a", "b"}

        wait_until(both_alive, ignoring=(httpx.HTTPError,))
        wait_until(
            lambda: _signal_count(env, "detector/a") > 0 and _signal_count(env, "detector/b") > 0
        )
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        after_kill = _signal_count(env, "detector/b")
        wait_until(lambda: _signal_count(env, "detector/b") > after_kill + 2)
        assert b.poll() is None, "instance b died with a"

        last = subprocess.run(
            [sys.executable, "-m", "barfinex_cli", "events", "query", "-t", "detector.signal",
             "--source", "detector/b", "--newest", "--limit", "1", "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        signal_id = json.loads(last.stdout)["id"]
        tree = subprocess.run(
            [sys.executable, "-m", "barfinex_cli", "trace", signal_id, "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        root = json.loads(tree.stdout)[0]
        assert root["event"]["type"] == "market.candle"
        assert root["children"][0]["event"]["id"] == signal_id
    finally:
        _interrupt(procs)
    assert b.returncode == 0, b.stderr
    assert provider.returncode == 0


def test_one_name_one_run_and_a_run_killed_hard_resumes_losing_and_doubling_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    from datetime import datetime

    from barfinex_cli.detector.engine import VectorEngine
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.store.market import MarketStore, SeriesKey

    strategy = tmp_path / "momentum.py"
    strategy.write_text(STRATEGY)
    port = env["BFX_PROVIDER_URL"].rsplit(":", 1)[1]
    health_port = str(free_port())
    provider = _bfx(env, "provider", "start", "--speed", "300", "--days", "1", "--history", "300",
                    "--symbols", "BTC/USDT", "--timeframes", "1m", "--port", port)  # fmt: skip
    procs = [provider]
    source = "detector/momentum_e2e"  # no --instance: the strategy's name
    try:
        base = env["BFX_PROVIDER_URL"]
        wait_until(
            lambda: httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200,
            ignoring=(httpx.HTTPError,),
        )
        first = _bfx(env, "detector", "run", str(strategy), "--port", health_port)
        procs.append(first)
        wait_until(lambda: len(_signals(env, source)) >= 2)

        second = _bfx(env, "detector", "run", str(strategy), "--port", "0")
        _, stderr = second.communicate(timeout=60)
        assert second.returncode == 2, stderr
        assert "--instance" in stderr and "already running" in stderr
        assert "Traceback" not in stderr
        assert first.poll() is None  # the first one is untouched

        first.send_signal(signal.SIGKILL)
        first.wait(30)
        killed_with = len(_signals(env, source))
        restarted = _bfx(env, "detector", "run", str(strategy), "--port", health_port)
        procs.append(restarted)  # waits for the dead run's lease to lapse, then resumes
        wait_until(lambda: len(_signals(env, source)) >= killed_with + 5, 90)
        assert restarted.poll() is None
    finally:
        _interrupt(procs)
    assert restarted.returncode == 0, restarted.stderr

    live = _signals(env, source)
    candles = [(p["candle_time"], p["direction"]) for p in live]
    assert len(candles) == len(set(candles))  # none doubled
    with MarketStore(Path(env["BFX_HOME"]) / "market.db") as market:
        frame = market.candles_frame(SeriesKey("synthetic", "BTC/USDT", "1m"))
    scanned = VectorEngine(load_strategy(strategy)).evaluate(frame, "BTC/USDT")
    first_ms = int(datetime.fromisoformat(str(live[0]["candle_time"])).timestamp() * 1000)
    last_ms = int(datetime.fromisoformat(str(live[-1]["candle_time"])).timestamp() * 1000)
    expected = [(r.open_ms, r.direction) for r in scanned if first_ms <= r.open_ms <= last_ms]
    got = [
        (int(datetime.fromisoformat(str(p["candle_time"])).timestamp() * 1000), p["direction"])
        for p in live
    ]
    assert got == expected  # none lost while it was down
