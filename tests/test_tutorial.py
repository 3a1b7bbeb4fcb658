"""The tutorial's quick commands still run and still print what docs/tutorial.md shows.

docs/tutorial.md promises that every command in it was run and that the output under it is real.
The blocks that are deterministic and quick carry a `<!-- tutorial-test -->` line just before
their ```bash fence; this test runs those blocks in order, as one user would, in a fresh data
directory (a real `bfx` subprocess per command, with `strategies/` of this checkout), and checks
that each exits 0 and prints every line of the ```text block that follows it (lines that are
`…` mark output the tutorial cut). The rest of the tutorial (bfx up, the studio, live data) is
slow or needs a terminal and is not run here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
MARKER = "<!-- tutorial-test -->"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    """A marked bash block of the tutorial and the output the tutorial shows for it."""

    line: int
    script: str
    expected: tuple[str, ...]


def marked_blocks(text: str) -> list[Block]:
    """Return the bash blocks preceded by the marker, each with the text block after it."""
    blocks: list[Block] = []
    fences = list(FENCE.finditer(text))
    for i, fence in enumerate(fences):
        if fence.group(1) != "bash" or not text[: fence.start()].rstrip().endswith(MARKER):
            continue
        expected: tuple[str, ...] = ()
        after = fences[i + 1] if i + 1 < len(fences) else None
        if after is not None and after.group(1) == "text":
            between = text[fence.end() : after.start()]
            if not between.strip():
                expected = tuple(
                    line.rstrip() for line in after.group(2).splitlines() if line.strip() != "…"
                )
        blocks.append(Block(text.count("\n", 0, fence.start()) + 1, fence.group(2), expected))
    return blocks


def test_the_tutorial_marks_its_quick_blocks_each_with_the_output_it_shows() -> None:
    blocks = marked_blocks(TUTORIAL.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    assert all(block.expected for block in blocks)
    commands = "\n".join(block.script for block in blocks)
    for command in ("bfx data synth", "bfx data import", "bfx detector check", "bfx backtest"):
        assert command in commands


def test_the_tutorial_quick_blocks_run_and_print_what_it_shows(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (the tutorial pipes --json into it)")
    work = tmp_path / "work"
    bin_dir = tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    (work / "strategies").symlink_to(ROOT / "strategies")
    shim = bin_dir / "bfx"  # the bfx of this interpreter, whatever is first on PATH
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m barfinex_cli "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "BFX_HOME": str(tmp_path / "home"),
        "BFX_NAMESPACE": f"test-tutorial-{uuid.uuid4().hex[:8]}",
        "COLUMNS": "100",  # the width the tutorial's tables were printed at
        "TERM": "dumb",
    }
    env.pop("BFX_CONFIG", None)
    for block in marked_blocks(TUTORIAL.read_text(encoding="utf-8")):
        run = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + block.script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        where = f"docs/tutorial.md:{block.line}"
        assert run.returncode == 0, f"{where} exited {run.returncode}:\n{run.stderr}"
        printed = {line.rstrip() for line in (run.stdout + run.stderr).splitlines()}
        missing = [line for line in block.expected if line not in printed]
        assert not missing, (
            f"{where} no longer prints:\n"
            + "\n".join(missing)
            + ("\n--- it printed:\n" + run.stdout + run.stderr)
        )
