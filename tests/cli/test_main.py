"""The command tree: help everywhere, fast start-up, and one clean error line for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import typer
from typer.testing import CliRunner

from barfinex_cli.cli.main import app

HEAVY = (
    "polars",
    "ccxt",
    "litellm",
    "textual",
    "sklearn",
    "fastapi",
    "uvicorn",
    "pydantic",
    "redis",
    "numpy",
)


def _walk(command: Any, path: str = "bfx") -> list[tuple[str, Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _walk(sub, f"{path} {name}")
    return found


def test_every_command_and_group_has_help_text() -> None:
    root = typer.main.get_command(app)
    commands = _walk(root)
    assert len(commands) > 20  # the walk reached the sub-commands
    missing = [path for path, cmd in commands if not (cmd.help or "").strip()]
    assert missing == []


def test_help_lists_the_whole_command_tree(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in (
        "provider",
        "detector",
        "advisor",
        "inspector",
        "studio",
        "up",
        "backtest",
        "data",
        "events",
        "trace",
        "doctor",
        "config",
        "version",
    ):
        assert group in result.output


def test_importing_the_cli_pulls_in_no_heavy_package() -> None:
    code = f"import sys, barfinex_cli.cli.main; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_prints_json_for_scripts(runner: CliRunner) -> None:
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["version"]


def test_unknown_option_is_a_usage_error_with_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["events", "query", "--nope"])
    assert result.exit_code == 2


def test_importing_the_cli_does_not_start_asyncio_or_the_http_stack() -> None:
    code = (
        "import sys, barfinex_cli.cli.main; "
        "print([m for m in ('asyncio', 'httpx', 'starlette') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
