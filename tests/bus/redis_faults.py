"""Real faults for the Redis bus: a test-owned `redis-server` to kill and restart, and a proxy.

`RedisServer` runs `redis-server` on a spare port in a temporary directory (never the shared one
on 6379), with or without persistence; `stop` ends it the hard way (SIGKILL) or cleanly.
`DroppingProxy` sits between a client and that server on loopback and, when armed, lets the
next request reach Redis but closes the connection before the reply comes back: the one fault
where the client cannot know whether Redis applied what it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ports import free_port  # faults.stack imports it from here too


class RedisServer:
    """A `redis-server` this test owns: start, kill, start again on the same port and directory."""

    def __init__(self, data: Path, *, persistent: bool, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data = data
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server and wait until it answers PING (it refuses commands while loading)."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data), "--save", ""]  # fmt: skip
        if self.persistent:  # every write on disk before its reply: a kill loses nothing
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self._spawn(args)
        client = aioredis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            for _ in range(1000):
                try:
                    if await client.ping():
                        return
                except (RedisError, OSError):
                    await asyncio.sleep(0.01)
            raise TimeoutError(f"redis-server on {self.port} did not start")
        finally:
            await client.aclose()

    def _spawn(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, *, kill: bool = True) -> None:
        """End the server: SIGKILL (a crash) or SIGTERM (a clean shutdown)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(10)
        self.proc = None


class DroppingProxy:
    """A loopback TCP proxy to `port` that can lose one reply on purpose."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.dropped = 0
        self._armed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self) -> None:
        """Lose the next reply: the request reaches Redis, the connection closes before it."""
        self._armed = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # a handler must not end cancelled
            await self._pipe(reader, writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def upstream() -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        async def downstream() -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await up_reader.read(65536):
                    if self._armed:
                        self._armed = False
                        self.dropped += 1
                        # let Redis finish what it read (the rest of a pipeline), then hang up
                        await asyncio.sleep(0.1)
                        return
                    writer.write(data)
                    await writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()
