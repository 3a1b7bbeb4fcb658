"""The command reference cannot drift: docs/commands.md and the README's tree match the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from barfinex_cli.cli.main import app
from barfinex_cli.cli.reference import _leaves, render

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m barfinex_cli.cli.reference > docs/commands.md"


def _commands() -> dict[str, Any]:
    root = typer.main.get_command(app)
    return {
        ctx.command_path: cmd for ctx, cmd in _leaves(root, typer.Context(root, info_name="bfx"))
    }


def _readme_tree() -> list[tuple[str, str]]:
    """Return (command path, its text including continuation lines) for the README's tree."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## The command tree", 1)[1].split("```", 2)[1]
    entries: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("bfx "):
            entries.append((line, line))
        elif line.strip() and entries:
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
    return entries


def test_docs_commands_md_is_what_the_code_renders() -> None:
    page = (ROOT / "docs" / "commands.md").read_text()
    assert page == render(), f"docs/commands.md is stale: run `{REGENERATE}`"


def test_every_command_is_in_the_readme_tree() -> None:
    tree = " ".join(text for _, text in _readme_tree())
    pending = {"bfx advisor", "bfx inspector", "bfx studio", "bfx backtest", "bfx up"}
    missing = [path for path in _commands() if path not in pending and path + " " not in tree]
    assert missing == []


def test_every_option_the_readme_tree_names_exists_on_its_command() -> None:
    commands = _commands()
    wrong = []
    for first, text in _readme_tree():
        path = max((p for p in commands if first.startswith(p + " ") or first == p), key=len,
                   default=None)  # fmt: skip
        if path is None:
            continue  # the line of pending roles
        known = {o for p in commands[path].params for o in [*p.opts, *p.secondary_opts]}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b", text):
            if flag not in known:
                wrong.append(f"{path} {flag}")
    assert wrong == []


def test_data_download_is_documented_with_its_positional_arguments() -> None:
    (line,) = [text for first, text in _readme_tree() if first.startswith("bfx data download")]
    assert line.startswith("bfx data download EXCHANGE SYMBOL")
    assert "--exchange" not in line and "--symbol" not in line
