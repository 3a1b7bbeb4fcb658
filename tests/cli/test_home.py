"""The data directory: queries read a directory they may not write; writes say which flag to fix.

The tests run as root, whom permission bits do not stop, so the read-only directory is real only
for a process without CAP_DAC_OVERRIDE: the queries run under `setpriv` with that capability
dropped from their bounding set (as root), or as they are (as anyone else).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey
from cli.test_events import CANDLE


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a directory read-only")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[Path]:
    """A data directory holding audit.db and market.db, made read-only (mode 0500)."""
    home = tmp_path / "archive"
    home.mkdir()
    with AuditStore(home / "audit.db") as audit:
        audit.append(
            [
                make_event(CANDLE, source="provider", ts=datetime(2024, 1, 1, 0, i, tzinfo=UTC))
                for i in range(3)
            ]
        )
    with MarketStore(home / "market.db") as market:
        start = 1_704_067_200_000
        market.upsert_candles(
            SeriesKey("imported", "BTC/USDT", "1m"),
            [CandleRow(start + i * 60_000, 1.0, 2.0, 0.5, 1.5, 10.0) for i in range(5)],
        )
    home.chmod(0o500)
    try:
        yield home
    finally:
        home.chmod(0o700)


def _bfx(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env["BFX_HOME"] = str(home)
    return subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "barfinex_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_queries_work_on_a_data_directory_they_may_not_write(read_only_home: Path) -> None:
    before = sorted(p.name for p in read_only_home.iterdir())
    probe = _bfx(read_only_home, "data", "synth", "--days", "0.01")
    assert probe.returncode == 1, probe.stderr  # the directory really is read-only to them
    assert "cannot use" in probe.stderr and "BFX_HOME" in probe.stderr

    queried = _bfx(read_only_home, "events", "query", "--json")
    assert queried.returncode == 0, queried.stderr
    assert len(queried.stdout.splitlines()) == 3
    some_id = json.loads(queried.stdout.splitlines()[-1])["id"]
    traced = _bfx(read_only_home, "trace", some_id[-12:])
    assert traced.returncode == 0, traced.stderr
    listed = _bfx(read_only_home, "data", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["rows"] == 5
    gaps = _bfx(read_only_home, "data", "gaps", "--json")
    assert gaps.returncode == 0, gaps.stderr
    shown = _bfx(read_only_home, "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert sorted(p.name for p in read_only_home.iterdir()) == before


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "audit.db").write_bytes(b"this is not sqlite" * 100)
    result = _bfx(home, "events", "query")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {home / 'audit.db'} is not a readable SQLite database (file is not a "
        "database); move it away or point --data-dir (BFX_HOME) elsewhere"
    ]
