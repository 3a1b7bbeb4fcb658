"""Every CLI command, given bad input, answers with one line on stderr and the table's exit code.

Each case runs `bfx` as a real subprocess, as a user would: missing, binary and empty files, bad
times, bad numbers, bad URLs, and a data directory that cannot be used (a path under a regular
file: the tests run as root, whom permission bits do not stop). The exit codes are the README's
table: 1 an error to fix, 2 wrong usage, 3 a service that does not answer, 4 refused
credentials. Redis is not the point of most cases, so they point at a port where nothing
listens; no case needs a running provider.

The cases start together in one module-scoped pool (three at a time: the machine has two
cores), each bounded by a timeout; each test waits only for its own case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

STRATEGY = Path(__file__).resolve().parents[2] / "strategies" / "trend_ema_adx.py"
NO_REDIS = "redis://127.0.0.1:1/0"
SECRET = "hunter2-in-the-url"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Case:
    """One command line, the exit code it must end with, and what it must not print."""

    name: str
    args: tuple[str, ...]
    code: int
    says: str = ""
    """A piece of the error line (what the user must learn from it)."""
    forbid: str = SECRET


def _cases(bad_home: str) -> list[Case]:
    home = ("--data-dir", bad_home)
    s = str(STRATEGY)
    return [
        # global options and parsing
        Case("bad redis url", ("--redis-url", "notaurl", "events", "tail"), 2, "--redis-url"),
        Case("bad redis url, doctor", ("--redis-url", "notaurl", "doctor"), 2, "not a Redis URL"),
        Case("bad redis port", ("--redis-url", "redis://h:99999/0", "events", "query"), 2),
        Case(
            "password in an unreachable redis url",
            ("--redis-url", f"redis://:{SECRET}@127.0.0.1:1/0", "events", "tail"),
            3,
            "redis://:****@127.0.0.1:1/0",
        ),
        Case("unknown global option", ("--bogus", "version"), 2, "No such option"),
        Case("unknown bus", ("--bus", "kafka", "events", "tail"), 2, "--bus"),
        Case("bad namespace", ("--namespace", "a b", "events", "tail"), 2, "--namespace"),
        Case("unknown command", ("evnts",), 2, "No such command"),
        # a data directory that cannot be used
        Case("data synth, bad home", (*home, "data", "synth", "--days", "0.01"), 1, "--data-dir"),
        Case("data import, bad home", (*home, "data", "import", "GOOD"), 1, "--data-dir"),
        Case(
            "data download, bad home",
            (*home, "data", "download", "binance", "BTC/USDT"),
            1,
            "--data-dir",
        ),
        Case("data list, bad home", (*home, "data", "list"), 0),
        Case("data gaps, bad home", (*home, "data", "gaps"), 1, "--data-dir"),
        Case(
            "data repair, bad home",
            (*home, "data", "repair", "-e", "x", "-s", "y", "-t", "1m"),
            1,
            "--data-dir",
        ),
        Case(
            "data export, bad home",
            (*home, "data", "export", "--exchange", "x", "--symbol", "y", "--out", "o.csv"),
            1,
            "--data-dir",
        ),
        Case("events query, bad home", (*home, "events", "query"), 1, "--data-dir"),
        Case("trace, bad home", (*home, "trace", "0123456789ab"), 1, "--data-dir"),
        Case(
            "events record, bad home",
            (*home, "--bus", "memory", "events", "record"),
            1,
            "--data-dir",
        ),
        Case("doctor, bad home", (*home, "--bus", "memory", "doctor"), 1, "BFX_HOME"),
        Case(
            "provider start, bad home",
            (*home, "--bus", "memory", "provider", "start", "--port", "0", "--exit-at-end"),
            1,
            "--data-dir",
        ),
        Case(
            "detector scan from store, bad home",
            (*home, "detector", "scan", s, "--exchange", "synthetic"),
            1,
            "market",
        ),
        # events
        Case("tail since a word", ("events", "tail", "--since", "yesterday"), 2, "stream id"),
        Case("tail since a huge id", ("events", "tail", "--since", "9" * 30), 2, "--since"),
        Case("tail count 0", ("events", "tail", "--count", "0"), 2, "--count"),
        Case("tail count -1", ("events", "tail", "--count", "-1"), 2, "--count"),
        Case("tail count abc", ("events", "tail", "--count", "abc"), 2, "--count"),
        Case("tail unknown type", ("events", "tail", "-t", "market.candel"), 2, "unknown"),
        Case("query bad since", ("events", "query", "--since", "soon"), 2, "cannot read"),
        Case("query limit 0", ("events", "query", "--limit", "0"), 2, "--limit"),
        Case("query, no audit store", ("events", "query"), 1, "no audit store"),
        Case("schema typo", ("events", "schema", "market.candel"), 2, "market.candle"),
        Case("publish bad json", ("events", "publish", "market.candle", "{"), 2, "not a valid"),
        Case("publish unknown type", ("events", "publish", "nope.nope", "{}"), 2, "unknown"),
        Case("dead-letters limit 0", ("events", "dead-letters", "--limit", "0"), 2, "--limit"),
        Case("trace, no audit store", ("trace", "0123456789ab"), 1, "no audit store"),
        # data
        Case("import missing file", ("data", "import", "MISSING"), 1, "no such file"),
        Case("import binary file", ("data", "import", "BINARY"), 2, "binary"),
        Case("import empty file", ("data", "import", "EMPTY"), 2, "empty"),
        Case("import bad kind", ("data", "import", "GOOD", "--kind", "bars"), 2, "--kind"),
        Case(
            "export bad suffix",
            ("data", "export", "--exchange", "x", "--symbol", "y", "--out", "o.txt"),
            2,
            ".csv",
        ),
        Case(
            "export bad since",
            (
                "data",
                "export",
                "--exchange",
                "x",
                "--symbol",
                "y",
                "--out",
                "o.csv",
                "--since",
                "whenever",
            ),
            2,
            "cannot read",
        ),
        Case("synth days abc", ("data", "synth", "--days", "abc"), 2, "--days"),
        Case("synth days 0", ("data", "synth", "--days", "0"), 2, "--days"),
        Case("synth bad start", ("data", "synth", "--start", "someday"), 2, "cannot read"),
        Case(
            "download bad since",
            ("data", "download", "binance", "BTC/USDT", "--since", "x"),
            2,
            "cannot read",
        ),
        Case("download without symbol", ("data", "download", "binance"), 2, "SYMBOL"),
        Case("gaps bad until", ("data", "gaps", "--until", "later"), 2, "cannot read"),
        Case(
            "repair bad timeframe",
            ("data", "repair", "-e", "synthetic", "-s", "BTC/USDT", "-t", "7m"),
            2,
            "7m",
        ),
        # provider (never started: every case fails before serving)
        Case("provider speed -1", ("provider", "start", "--speed", "-1"), 2, "--speed"),
        Case("provider speed abc", ("provider", "start", "--speed", "abc"), 2, "--speed"),
        Case("provider port 99999", ("provider", "start", "--port", "99999"), 2, "--port"),
        Case("provider history -5", ("provider", "start", "--history", "-5"), 2, "--history"),
        Case("provider bad clock", ("provider", "start", "--clock", "sundial"), 2, "--clock"),
        Case(
            "provider replay missing",
            ("--bus", "memory", "provider", "start", "--port", "0", "--replay", "MISSING"),
            1,
            "MISSING",
        ),
        Case("provider status, none running", ("provider", "status"), 3, "provider"),
        # detector
        Case("check missing file", ("detector", "check", "MISSING.py"), 1, "no such"),
        Case("check a csv", ("detector", "check", "GOOD"), 2, ".py"),
        Case("check binary .py", ("detector", "check", "BINARY.py"), 2, "not a text file"),
        Case("check empty .py", ("detector", "check", "EMPTY.py"), 1, "exports no `strategy`"),
        Case("check rsi(0)", ("detector", "check", "RSI0.py"), 1, "period must be"),
        Case("check sys.exit", ("detector", "check", "EXITS.py"), 1, "sys.exit"),
        Case("check unreachable threshold", ("detector", "check", "NEVER.py"), 1, "never fire"),
        Case("scan binary data", ("detector", "scan", s, "--data", "BINARY"), 2, "binary"),
        Case("scan empty data", ("detector", "scan", s, "--data", "EMPTY"), 2, "empty"),
        Case("scan missing data", ("detector", "scan", s, "--data", "MISSING"), 1, "MISSING"),
        Case("scan with no data source", ("detector", "scan", s), 2, "--data"),
        Case("lookahead binary", ("detector", "lookahead", s, "--data", "BINARY"), 2, "binary"),
        Case("run port 99999", ("detector", "run", s, "--port", "99999"), 2, "--port"),
        Case("run missing strategy", ("detector", "run", "MISSING.py"), 1, "no such"),
        Case("run, no redis", ("detector", "run", s, "--port", "0"), 3, "Redis not reachable"),
        Case(
            "run, no provider",
            ("--bus", "memory", "detector", "run", s, "--port", "0"),
            3,
            "provider",
        ),
    ]


STRATEGY_HEAD = (
    "from barfinex_cli.detector import indicators as ta\n"
    "from barfinex_cli.detector.strategy import Rule, Strategy\n"
)
FILES = {
    "GOOD": b"open_ms,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,10\n",
    "BINARY": bytes(range(256)) * 8,
    "EMPTY": b"",
    "BINARY.py": b"\x00\x01\x02\xff\xfe" * 50,
    "EMPTY.py": b"",
    "RSI0.py": (
        STRATEGY_HEAD + 'strategy = Strategy("m", ["BTC/USDT"], "1m", '
        '[Rule("r", ta.rsi(0) < 30, 1.0, "long")], threshold=1.0)\n'
    ).encode(),
    "EXITS.py": b"import sys\nsys.exit(0)\n",
    "NEVER.py": (
        STRATEGY_HEAD + 'strategy = Strategy("m", ["BTC/USDT"], "1m", '
        '[Rule("r", ta.close > 1, 1.0, "long")], threshold=2.0)\n'
    ).encode(),
}


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[Outcome]]]:
    """Start every case (a few at a time) and return each one's future outcome by name."""
    root = tmp_path_factory.mktemp("sweep")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    (root / "a-file").write_text("not a directory\n")
    bad_home = str(root / "a-file" / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(
        BFX_NAMESPACE=f"sweep-{uuid.uuid4().hex[:8]}",
        BFX_REDIS_URL=NO_REDIS,
        BFX_PROVIDER_URL="http://127.0.0.1:1",
        COLUMNS="80",
    )

    def run(case: Case) -> Outcome:
        home = root / "homes" / case.name.replace(" ", "-").replace(",", "")
        args = [
            a if a not in FILES and a not in ("MISSING", "MISSING.py") else str(root / a)
            for a in case.args
        ]
        done = subprocess.run(
            [sys.executable, "-m", "barfinex_cli", *args],
            env={**env, "BFX_HOME": str(home)},
            cwd=root,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    pool = ThreadPoolExecutor(max_workers=3)
    try:  # submitted now, awaited by each test: no single test waits for the whole sweep
        yield {case.name: pool.submit(run, case) for case in _cases(bad_home)}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


CASES = _cases("BAD_HOME")


def test_case_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_is_one_line_with_the_tables_exit_code(
    case: Case, outcomes: dict[str, Future[Outcome]]
) -> None:
    got = outcomes[case.name].result(timeout=100)
    assert "Traceback" not in got.stderr + got.stdout, got.stderr
    assert got.code == case.code, got.stderr or got.stdout
    assert case.forbid not in got.stderr + got.stdout
    if case.code == 0:
        return
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1, got.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert case.says in lines[0]
