"""The real `bfx studio` process in a real terminal (tmux): it starts, shows its header, quits on q.

A replaying provider runs on loopback in the test's loop; tmux (its own server on a socket in
`tmp_path`, so no other tmux session is touched) runs `bfx studio` in a 140x40 pane with the
token in the pane's environment. The test reads the pane with capture-pane until the header
and the chart show, sends `q`, and checks the process ended with status 0 and left the
terminal as it found it (the alternate screen closed).

The status is written by the shell that runs `bfx studio` (`...; echo $? > status`), not read
from tmux's `#{pane_dead_status}`: tmux marks a pane dead once its terminal closes and learns the
status only when it reaps the process, and on a loaded machine tmux 3.3a at times never reaped it
(the studio stayed a zombie of the tmux server with exit code 0, for as long as it was watched),
so `pane_dead_status` stayed empty although the studio had exited cleanly.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from polling import until
from studio.stack import TOKEN, running_provider

TMUX = shutil.which("tmux")


async def _tmux(sock: Path, *args: str) -> str:
    assert TMUX is not None
    process = await asyncio.create_subprocess_exec(
        TMUX, "-S", str(sock), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tmux {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


@pytest.mark.slow
@pytest.mark.skipif(TMUX is None, reason="needs tmux (CI: .ci/run installs it)")
async def test_bfx_studio_starts_in_a_terminal_shows_the_header_and_quits_on_q(
    tmp_path: Path, namespace: str
) -> None:
    sock = tmp_path / "tmux.sock"
    async with running_provider(tmp_path / "home", namespace) as running:
        status = tmp_path / "status"
        studio = (
            f"{shlex.quote(sys.executable)} -m barfinex_cli studio --url {running.url} --poll 1"
        )
        command = f"{studio}; echo $? > {shlex.quote(str(status))}"
        await _tmux(
            sock, "new-session", "-d", "-s", "studio", "-x", "140", "-y", "40",
            "-e", f"BFX_TOKEN={TOKEN}", "-e", f"BFX_HOME={tmp_path / 'studio-home'}",
            "-e", "TERM=xterm-256color", "-c", str(tmp_path), command,
        )  # fmt: skip
        try:
            await _tmux(sock, "set-option", "-t", "studio", "remain-on-exit", "on")
            screen = ""

            async def pane() -> str:
                nonlocal screen
                screen = await _tmux(sock, "capture-pane", "-p", "-t", "studio")
                return screen

            await until(lambda: _has(pane, "bfx studio", "connected"), 60, what="the header")
            await until(
                lambda: _has(pane, "synthetic BTC/USDT 1m", "candles", "1 Market"),
                60, what="the market screen with its chart",
            )  # fmt: skip
            assert "Traceback" not in screen

            await _tmux(sock, "send-keys", "-t", "studio", "q")
            await until(status.exists, 60, what="bfx studio to exit after q", step_s=0.1)
            await until(lambda: status.read_text().endswith("\n"), 10, what="the status line")
            assert status.read_text().strip() == "0"  # exited by itself, not by a signal
            # the app's screen is gone: the terminal is restored (polled: tmux may still be
            # reading the last bytes the studio wrote)
            await until(
                lambda: _lacks(pane, "bfx studio"), 30, what="the studio's screen to close"
            )  # fmt: skip
            assert "Traceback" not in screen
        finally:
            await _tmux(sock, "kill-server")


async def _has(pane: Callable[[], Awaitable[str]], *words: str) -> bool:
    text = await pane()
    return all(w in text for w in words)


async def _lacks(pane: Callable[[], Awaitable[str]], word: str) -> bool:
    return word not in await pane()
