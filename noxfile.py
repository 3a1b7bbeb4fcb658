"""Developer sessions: tests, lint (ruff, mypy, import-linter) and benchmarks."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the whole test suite (needs Redis on 127.0.0.1:6379)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Check style, types and the layering contracts."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("mypy")
    session.run("lint-imports")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run every benchmark script; each prints a table of ratios against its baseline."""
    session.install("-e", ".[dev,bench]")
    scripts = session.posargs or sorted(
        str(p) for p in __import__("pathlib").Path("benchmarks").glob("*.py")
    )
    for script in scripts:
        session.run("python", script)


@nox.session(python="3.11")
def faults_long(session: nox.Session) -> None:
    """Run the role-kill fault test over 10,000 candles, as issue 13 asks (BFX_FAULTS_CANDLES).

    About 30 minutes on this 2-core machine (29 min on 2026-11-26, a test suite running beside it).
    """
    session.install("-e", ".[dev]")
    session.env["BFX_FAULTS_CANDLES"] = os.environ.get("BFX_FAULTS_CANDLES", "10000")
    session.run(
        "python", "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q",
        "tests/faults/test_role_kills.py", *session.posargs,
    )  # fmt: skip
