"""Helpers for CLI tests: run `bfx` in-process with Typer's runner or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REDIS_URL

BfxRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path, namespace: str) -> dict[str, str]:
    """Environment for a bfx run isolated in its own data dir and bus namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(
        BFX_HOME=str(tmp_path / "home"),
        BFX_NAMESPACE=namespace,
        BFX_REDIS_URL=REDIS_URL,
        BFX_PROVIDER_URL="http://127.0.0.1:1",  # no provider unless a test starts one
    )
    return env


@pytest.fixture
def runner(cli_env: dict[str, str]) -> CliRunner:
    """A Typer runner with the isolated environment."""
    return CliRunner(env=cli_env)


@pytest.fixture
def bfx(cli_env: dict[str, str], tmp_path: Path) -> BfxRun:
    """Run `bfx ARGS` as a real subprocess; return the completed process."""

    def run(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "barfinex_cli", *args],
            env=cli_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,  # type: ignore[arg-type]
        )

    return run
