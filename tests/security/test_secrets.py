"""Planted secrets never leave where they belong: not printed, logged, stored or sent on the bus.

Distinctive exchange, LLM, Telegram, webhook and gateway keys are planted in the environment. A
real stack runs on Redis (provider, detector, advisor with an LLM model on a loopback
OpenAI-compatible server, inspector with Telegram pointed at a loopback Bot API, webhooks to a
loopback receiver) until the advisor's LLM stage has had an answer from the loopback server (an
`advisor.llm.responded` on the bus; the server got the LLM key in the Authorization header of
every request, and no other server got it), Telegram has been called with its token and the
webhook receiver with a signed alert, which proves the keys were in use. Then every captured log
record (litellm's debug log among them), every file of the data directory
(the SQLite stores and their WAL files; the gateway's own 0600 token file aside), every Redis key
of the namespace, the text of the studio's six screens (run against the live gateway) and the
output of `bfx config show` and `bfx doctor` are searched for each key.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import polling
from barfinex_cli.runtime.settings import load_settings
from conftest import REDIS_URL
from security.stack import running_stack

SECRETS = {
    "BFX_ADVISOR__LLM_API_KEY": "sk-PLANTEDllm7f3a9c",
    "BFX_TELEGRAM_TOKEN": "4242:PLANTEDtelegram1b2c",
    "BFX_WEBHOOK_SECRET": "PLANTEDwebhook9d8e",
    "BFX_BINANCE_API_KEY": "PLANTEDexchangeKey55",
    "BFX_BINANCE_SECRET": "PLANTEDexchangeSecret66",
    "BFX_TOKEN": "PLANTEDgatewayToken77",
}
ANSWER = json.dumps({"bias": "neutral", "sizing_multiplier": 1.0, "reasoning": "no strong view"})
"""A valid answer (the advisor's `Answer`), citing no number and against no evidence: accepted."""


class _Recorder(BaseHTTPRequestHandler):
    """Loopback stand-in for the LLM server, the Telegram Bot API and a webhook receiver."""

    seen: list[tuple[str, str]] = []  # (path, headers + body)

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, str(self.headers) + body.decode(errors="replace")))
        if self.path.endswith("/chat/completions"):
            reply: dict[str, Any] = {
                "id": "c1", "object": "chat.completion", "created": int(time.time()),
                "model": "planted", "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                              "total_tokens": 2},
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": ANSWER}}],
            }  # fmt: skip
        else:
            reply = {"ok": True, "result": {}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _poll(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _redis_dump(namespace: str) -> bytes:
    """Return every value of every Redis key of the namespace, concatenated."""
    client = redis.Redis.from_url(REDIS_URL)
    out = []
    try:
        for key in client.scan_iter(match=f"bfx:{namespace}:*", count=1000):
            kind = client.type(key).decode()
            out.append(key)
            if kind == "stream":
                for _, fields in client.xrange(key):
                    out.extend(k + b"=" + v for k, v in fields.items())
            elif kind == "string":
                out.append(client.get(key) or b"")
            elif kind == "set":
                out.extend(client.smembers(key))
            elif kind == "hash":
                out.extend(k + b"=" + v for k, v in client.hgetall(key).items())
            elif kind == "list":
                out.extend(client.lrange(key, 0, -1))
            elif kind == "zset":
                out.extend(client.zrange(key, 0, -1))
        for key in client.scan_iter(match=f"bfx:{namespace}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
    return b"\n".join(out)


def _llm_answered(namespace: str) -> bool:
    """Tell whether the advisor has published an `advisor.llm.responded` on the namespace."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return bool(client.xlen(f"bfx:{namespace}:advisor.llm.responded"))
    finally:
        client.close()


def _found(haystack: bytes | str, where: str) -> list[str]:
    text = haystack.encode(errors="replace") if isinstance(haystack, str) else haystack
    return [f"{name} in {where}" for name, value in SECRETS.items() if value.encode() in text]


async def _studio_screens(url: str, token: str) -> str:
    """Return the text of each of the studio's six screens, run against the live gateway."""
    from barfinex_cli.studio.app import StudioApp

    app = StudioApp(url, token, poll_s=0.5, feed_options={"backoff_s": 0.05, "max_backoff_s": 0.2})
    shots: list[str] = []
    async with app.run_test(size=(160, 48)) as pilot:
        await polling.until(
            lambda: app.state.connection.state == "connected" and app.state.inspector.app,
            60,
            what="the studio to connect and see the inspector",
        )
        for key in "123456":
            await pilot.press(key)
            await pilot.pause()
            shots.append(app.export_screenshot())
    text = html.unescape(re.sub(r"<[^>]+>", "", "\n".join(shots))).replace("\xa0", " ")
    assert "Services" in text and "Decisions" in text  # the screens were drawn
    return text


@pytest.mark.redis
@pytest.mark.timeout(300)  # the LLM stage waits for the replay's first signals: slow when loaded
def test_planted_keys_appear_in_no_output_log_store_or_redis_key(
    tmp_path: Path,
    namespace: str,
    recorder: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BFX_TELEGRAM_CHAT", "1001")
    home = tmp_path / "home"
    settings = load_settings(
        home=home, namespace=namespace, bus="redis", redis_url=REDIS_URL,
        webhooks={"targets": [{"url": f"{recorder}/hook", "types": ["inspector.alert"]}]},
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    advisor = {"llm_models": ("openai/planted",), "llm_api_base": f"{recorder}/v1",
               "llm_timeout_s": 5.0, "min_conviction": 0.0, "min_quality": 0.0,
               "max_staleness": 10_000}  # fmt: skip
    with running_stack(
        settings, tmp_path, advisor=advisor, inspector={"telegram_api": recorder}, speed=600
    ) as stack:
        assert stack.token == SECRETS["BFX_TOKEN"]
        # the LLM stage runs: a signal reaches the advisor, which asks the loopback LLM server
        _poll(lambda: _llm_answered(namespace), 120, "the advisor's LLM stage to get an answer")
        stood = httpx.post(
            f"{stack.gateway_url}/proxy/inspector/api/v1/stand-down",
            json={"reason": "secrets test"},
            headers={"Authorization": f"Bearer {stack.token}"},
        )
        assert stood.status_code == 200
        _poll(lambda: any("/bot" in p for p, _ in _Recorder.seen), 20, "a Telegram alert")
        config = stack.run.advisors[0].config  # the LLM key reached the advisor, as a SecretStr
        assert config.llm_api_key.get_secret_value() == SECRETS["BFX_ADVISOR__LLM_API_KEY"]
        _poll(lambda: any(p == "/hook" for p, _ in _Recorder.seen), 20, "a webhook")
        screens = asyncio.run(_studio_screens(stack.gateway_url, stack.token))
    seen = dict(_Recorder.seen[::-1])
    llm_key = SECRETS["BFX_ADVISOR__LLM_API_KEY"]
    asked = [request for path, request in _Recorder.seen if path.endswith("/chat/completions")]
    assert asked, "the advisor never called its LLM"
    for request in asked:  # the key goes to the LLM server, in its Authorization header ...
        lines = request.split("\n\n", 1)[0].splitlines()
        headers = dict(
            (n.strip().lower(), v.strip()) for n, _, v in (h.partition(":") for h in lines)
        )
        assert headers.get("authorization") == f"Bearer {llm_key}", request[:500]
    for path, request in _Recorder.seen:  # ... and to no other server
        if not path.endswith("/chat/completions"):
            assert llm_key not in path + request, path
    assert any(SECRETS["BFX_TELEGRAM_TOKEN"] in p for p in seen)
    assert not _found(seen["/hook"], "the webhook request")  # signed with it, never carrying it

    leaks: list[str] = []
    out, err = capfd.readouterr()
    leaks += _found(out, "stdout") + _found(err, "stderr")
    for record in caplog.records:
        leaks += _found(f"{record.getMessage()} {vars(record)}", f"log record {record.name}")
    files = [p for p in home.rglob("*") if p.is_file() and p.name != "token"]
    assert {"audit.db", "market.db", "paper.db", "inspector.db"} <= {p.name for p in files}
    for path in files:
        leaks += _found(path.read_bytes(), str(path.relative_to(home)))
    dump = _redis_dump(namespace)
    assert b"detector.signal" in dump and b"inspector.alert" in dump  # the bus was used
    assert b"advisor.llm.responded" in dump  # the LLM's answer went over the bus too
    leaks += _found(dump, "Redis")
    leaks += _found(screens, "the studio's screens")

    env = {**os.environ, "BFX_HOME": str(home), "BFX_NAMESPACE": namespace,
           "BFX_REDIS_URL": REDIS_URL, "BFX_LOG_JSON": "true"}  # fmt: skip
    for args in (["config", "show"], ["config", "show", "--json"], ["doctor"]):
        done = subprocess.run(
            [sys.executable, "-m", "barfinex_cli", *args], env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        leaks += _found(done.stdout + done.stderr, f"bfx {' '.join(args)}")
    assert leaks == []
