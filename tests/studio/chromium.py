"""Headless Chromium driven over the DevTools protocol, offline, with no Playwright.

The studio's web page draws the terminal on a canvas, so its text is not in the DOM. `Browser`
opens the page and collects what the page's websocket receives from the app process
(`Network.webSocketFrameReceived`, the bytes xterm.js draws), so a test can wait for the
header's words in what the browser got, then `screenshot` the page as it is painted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One page of a headless Chromium, driven over CDP."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received = ""
        """Every websocket frame the page received, decoded as UTF-8 text (escapes included)."""
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self._answers:
                self._answers.pop(message["id"]).set_result(message)
            elif message.get("method") == "Network.webSocketFrameReceived":
                frame = message["params"]["response"]
                data = frame["payloadData"]
                if frame.get("opcode") == 2:  # binary: base64
                    data = base64.b64decode(data).decode("utf-8", errors="replace")
                self.received += data

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result."""
        key = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[key] = answer
        await self.ws.send(json.dumps({"id": key, "method": method, "params": params}))
        reply = await asyncio.wait_for(answer, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def text(self) -> str:
        """Return what the page received with the terminal's escape sequences removed."""
        return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[\]P].*?(\x07|\x1b\\)", "", self.received)

    async def open(self, url: str, width: int, height: int) -> None:
        """Load `url` in a `width` x `height` viewport."""
        await self.call("Network.enable")
        await self.call("Page.enable")
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)  # fmt: skip
        await self.call("Page.navigate", url=url)

    async def painted(self) -> None:
        """Wait until the page has painted what it holds (two animation frames)."""
        await self.call("Runtime.evaluate", awaitPromise=True, expression=(
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        ))  # fmt: skip

    async def press(self, key: str) -> None:
        """Type one printable key into the page's terminal (focusing it first, as a click would)."""
        await self.call("Runtime.evaluate", expression=(
            "document.querySelector('.xterm-helper-textarea').focus()"
        ))  # fmt: skip
        # xterm.js reads printable keys from the textarea's input events; a synthetic keyDown
        # without a real keyboard layout is not one, inserted text is
        await self.call("Input.insertText", text=key)

    async def screenshot(self, path: Path) -> None:
        """Save the viewport as a PNG."""
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Browser]:
    """Run headless Chromium with a fresh profile; yield its first page, driven over CDP."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        endpoint = ""
        while not endpoint:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("chromium exited before it listened for DevTools")
            if m := re.search(r"DevTools listening on ws://([^/]+)/", line):
                endpoint = m.group(1)
        drain = asyncio.create_task(process.stderr.read())  # a full pipe would stall chromium
        async with httpx.AsyncClient() as client:
            pages = (await client.get(f"http://{endpoint}/json/list")).json()
        page = next(p for p in pages if p.get("type") == "page")
        async with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            browser = Browser(ws)
            try:
                yield browser
            finally:
                browser._reader.cancel()
        drain.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
