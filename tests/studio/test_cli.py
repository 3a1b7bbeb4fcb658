"""`bfx studio` refuses a bad theme or URL in one line with exit 2, before drawing anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def bfx(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env["BFX_HOME"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "studio", *args],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_an_unknown_theme_is_a_usage_error_listing_the_themes(tmp_path: Path) -> None:
    done = bfx(tmp_path, "--theme", "no-such-theme")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--theme 'no-such-theme'" in lines[0] and "nord" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_url_that_is_not_http_is_a_usage_error(tmp_path: Path) -> None:
    done = bfx(tmp_path, "--url", "ftp://127.0.0.1:8081")
    assert done.returncode == 2
    assert "give an http:// or https:// address" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
