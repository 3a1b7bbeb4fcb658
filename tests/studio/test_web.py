"""`bfx studio --web`: the studio served by textual-serve, loaded in a real headless Chromium.

The browser test starts a replaying provider on loopback, runs the real `bfx studio --web`
process against it (the token only in its environment), opens the page in headless Chromium
over the DevTools protocol and waits until the page has received the studio's header and the
Market screen's chart from the app process; then it saves a screenshot. With
`BFX_DOCS_IMG=1` the screenshot also replaces docs/img/studio-web.png, the one docs/studio.md
shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from barfinex_cli.studio.web import HOST, WebOptions, app_command, page_url, port_free
from ports import free_port
from studio.chromium import CHROMIUM, chromium
from studio.stack import TOKEN, running_provider, until

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "studio-web.png"


def test_the_app_command_carries_the_options_but_never_the_token() -> None:
    command = app_command(WebOptions("http://127.0.0.1:8081", "s3cret", "nord", 2.0, 8090))
    assert "s3cret" not in command
    expected = "-m barfinex_cli studio --url http://127.0.0.1:8081 --poll 2.0 --theme nord"
    assert command.split()[1:] == expected.split()
    assert page_url(8090) == "http://127.0.0.1:8090" and HOST == "127.0.0.1"


def test_a_taken_port_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind((HOST, 0))
        held.listen()
        port = held.getsockname()[1]
        assert not port_free(port)
        result = subprocess.run(
            [sys.executable, "-m", "barfinex_cli", "studio", "--web", "--port", str(port),
             "--url", "http://127.0.0.1:9", "--token", "x"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env={**os.environ, "BFX_HOME": str(tmp_path)},
        )  # fmt: skip
    assert result.returncode == 1
    assert f"--port {port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (CI: .ci/run installs it)")
async def test_the_browser_shows_the_studio_header_and_the_chart(
    tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    async with running_provider(tmp_path / "home", namespace) as running:
        env = {**os.environ, "BFX_TOKEN": TOKEN, "BFX_HOME": str(tmp_path / "web-home")}
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "barfinex_cli", "studio", "--web", "--port", str(port),
            "--url", running.url, "--poll", "1",
            env=env, cwd=tmp_path, start_new_session=True,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _until_serving(page_url(port), server)
            async with chromium(tmp_path / "profile") as browser:
                await browser.open(page_url(port), 1400, 820)
                await until(lambda: "bfx studio" in browser.text(), timeout=60)
                await until(lambda: "synthetic BTC/USDT 1m" in browser.text(), timeout=60)
                await until(lambda: "candles" in browser.text(), timeout=30)  # history loaded
                assert TOKEN not in browser.received  # the page never sees the token
                await browser.painted()
                shot = tmp_path / "studio-web.png"
                await browser.screenshot(shot)
                for _ in range(30):  # zoom out, typed into the page (the first key focuses it)
                    await browser.press("-")
                    with contextlib.suppress(AssertionError):
                        await until(lambda: "(bar = " in browser.text(), timeout=1)
                        break
                assert "(bar = 2 candles)" in browser.text()
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
            if os.environ.get("BFX_DOCS_IMG") == "1":
                shutil.copyfile(shot, DOCS_IMG)
        finally:
            if server.returncode is None:
                os.killpg(server.pid, signal.SIGTERM)  # the server and the app processes it ran
            await asyncio.wait_for(server.wait(), 30)


async def _until_serving(url: str, server: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            assert server.returncode is None, "bfx studio --web exited before it served"
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer")
