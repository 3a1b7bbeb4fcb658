"""Run each role as its own `bfx` process, restart the ones that crash, stop them in order.

`bfx up` starts every role with the same subcommand a user runs by hand (`bfx provider start`,
`bfx detector run`, ...). A role that exits with an error is restarted after a backoff; its
consumer group hands it back what it had not acknowledged, so nothing is lost. A role that keeps
crashing (more than `max_restarts` in `window_s`) is reported and the stack stops rather than
loop forever. A role that exits with 2 refused to start (a mistake a restart cannot mend, such as
a detector instance name already running on another host): it is not restarted, and the stack
stops with the role's own one-line error. A role that ends on its own with exit 0 (a provider at
the end of its replay) ends the stack. Stopping goes consumers first and producers last: the
reverse of the start order, the detectors together. Each role gets SIGINT and `stop_timeout_s`
(10 s) to finish; past that it is killed (SIGKILL), which loses nothing: what it had not
acknowledged stays pending for its next start. `hurry` (a second Ctrl-C) kills the rest at once.

The `root` role (the provider under `bfx up`) is the one every other role depends on: when it
fails to start the stack stops at once with its own one-line error and exit code (`bfx up
--live` offline says "cannot reach binance (offline?)", exit 3) instead of starting the rest;
and when a downstream role crashes too often while the root is down, the root's error is the
one reported, not the downstream role's "provider not reachable".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from barfinex_cli import backoff
from barfinex_cli.errors import BfxError

log = logging.getLogger("bfx.up")


class RoleCrashing(BfxError):
    """A role crashed too often in a short time; the stack stops."""


class RoleRefused(BfxError):
    """A role refused to start (exit 2); restarting it would refuse again, so the stack stops."""

    exit_code = 2


class RootFailed(BfxError):
    """The role every other depends on (the provider) failed: its own error, its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code > 0 else 1


REFUSED = 2
"""The exit code of a user mistake (errors.UsageError): never restarted."""


@dataclass
class RoleProcess:
    """One role: its `bfx` arguments and what happened to it so far."""

    name: str
    args: tuple[str, ...]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    state: str = "starting"
    exit_codes: list[int] = field(default_factory=list)
    crashes: deque[float] = field(default_factory=deque)
    log_path: Path | None = None
    log_start: int = 0
    """The size of its log when it was last started: its own error is read from there on."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables set for this role only, over the supervisor's environment."""
    stop_code: int | None = None
    """How it ended when the stack stopped it: its exit code (-9 when killed), None if it was
    not running then."""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    """Start roles in order, keep them running, stop them in reverse order."""

    def __init__(
        self,
        roles: Sequence[RoleProcess],
        env: dict[str, str],
        logs: Path,
        *,
        max_restarts: int = 5,
        window_s: float = 60.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        root: str | None = None,
    ) -> None:
        self.roles = list(roles)
        self.env = env
        self.logs = logs
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.root = root
        """The name of the role the others depend on (the provider); see the module doc."""
        self.finished: RoleProcess | None = None
        """The role whose clean exit ended the stack (a replay that reached its end)."""
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        """Kill the roles still stopping, and stop the rest without waiting (a second Ctrl-C)."""
        self._hurry.set()

    async def _spawn(self, role: RoleProcess) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        role.log_path = self.logs / f"{role.name}.log"
        role.log_start = role.log_path.stat().st_size if role.log_path.is_file() else 0
        out = role.log_path.open("ab")
        try:
            role.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "barfinex_cli", *role.args,
                env={**self.env, **role.env}, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out,
                start_new_session=True,  # Ctrl-C reaches bfx up only; it stops the roles in order
            )  # fmt: skip
        finally:
            out.close()
        role.state = "running"

    async def start(self, gate: Callable[[RoleProcess], Awaitable[None]] | None = None) -> None:
        """Start every role in order (producers first); `gate` may wait on one before the next.

        `bfx up` waits for the provider's gateway to answer before it starts the roles that
        warm up from it.
        """
        for role in self.roles:
            await self._spawn(role)
            if gate is not None:
                await gate(role)
            code = None if role.process is None else role.process.returncode
            if role.name == self.root and code not in (None, 0):
                role.exit_codes.append(code)
                role.state = "failed"
                raise self._root_failed(role, code, "failed to start")

    async def watch(self, stop: asyncio.Event) -> None:
        """Keep the roles running until `stop`, a clean exit of one, or one crashing too often."""
        while not stop.is_set():
            waits = {
                asyncio.ensure_future(r.process.wait()): r
                for r in self.roles
                if r.process is not None and r.state == "running"
            }
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({*waits, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for pending in [*waits, stopped]:
                if pending not in done:
                    pending.cancel()
            if stop.is_set():
                return
            for task in done:
                role = waits.get(task)
                if role is not None:
                    await self._exited(role, task.result(), stop)

    async def _exited(self, role: RoleProcess, code: int, stop: asyncio.Event) -> None:
        role.exit_codes.append(code)
        if code == 0:
            role.state = "finished"
            self.finished = role
            log.info("role finished; stopping the stack", extra={"role": role.name})
            stop.set()
            return
        if code == REFUSED:
            role.state = "refused"
            stop.set()
            raise RoleRefused(f"{role.name} refused to start: {_last_error(role, REFUSED)}")
        now = time.monotonic()
        role.crashes.append(now)
        while role.crashes and now - role.crashes[0] > self.window_s:
            role.crashes.popleft()
        if len(role.crashes) > self.max_restarts:
            role.state = "crashing"
            stop.set()
            if role.name == self.root:
                raise self._root_failed(
                    role, code, f"crashed {len(role.crashes)} times in {self.window_s:g} s"
                )
            root = self._root_down(now)
            if root is not None:  # it crashed for want of the root: report the root's error
                raise self._root_failed(root, root.exit_codes[-1], "is down")
            raise RoleCrashing(
                f"{role.name} crashed {len(role.crashes)} times in {self.window_s:g} s "
                f"(last exit code {code}) — see {role.log_path}"
            )
        role.state = "restarting"
        wait = backoff.delay(len(role.crashes), self.backoff_s, self.max_backoff_s)
        log.warning(
            "role exited; restarting", extra={"role": role.name, "code": code, "in_s": wait}
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        if stop.is_set():
            return
        role.restarts += 1
        await self._spawn(role)

    def _root_down(self, now: float) -> RoleProcess | None:
        """Return the root role if it exited with an error within the window and is not back up."""
        for role in self.roles:
            if role.name == self.root and role.exit_codes and role.exit_codes[-1] != 0:
                recent = bool(role.crashes) and now - role.crashes[-1] <= self.window_s
                if role.state != "running" or recent:
                    return role
        return None

    def _root_failed(self, role: RoleProcess, code: int, what: str) -> RootFailed:
        return RootFailed(f"{role.name} {what}: {_last_error(role, code)}", code)

    async def stop(self) -> None:
        """Stop the roles in reverse start order: SIGINT, then SIGKILL past the timeout.

        Peers of one kind (the detectors, `detector:NAME`) stop together: none feeds another.
        """
        tiers: list[list[RoleProcess]] = []
        for role in reversed(self.roles):
            if tiers and _kind(tiers[-1][0]) == _kind(role):
                tiers[-1].append(role)
            else:
                tiers.append([role])
        for tier in tiers:
            await asyncio.gather(*(self._stop_one(role) for role in tier))

    async def _stop_one(self, role: RoleProcess) -> None:
        process = role.process
        if process is None or process.returncode is not None:
            return
        role.state = "stopping"
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        exited = asyncio.ensure_future(process.wait())
        hurried = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait(
            {exited, hurried}, timeout=self.stop_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        hurried.cancel()
        if not exited.done():
            why = "asked to hurry" if self._hurry.is_set() else f"{self.stop_timeout_s:g} s"
            log.warning(
                "role did not stop in time; killed", extra={"role": role.name, "after": why}
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        role.stop_code = await exited
        role.state = "stopped"
        log.info(
            "role stopped",
            extra={
                "role": role.name, "code": role.stop_code,
                "in_s": round(time.monotonic() - began, 2),
            },
        )  # fmt: skip


def _kind(role: RoleProcess) -> str:
    return role.name.split(":", 1)[0]


def _last_error(role: RoleProcess, code: int) -> str:
    """Return the role's own one-line error (`error: ...`) of its last run, or where its log is."""
    log_path = role.log_path
    if log_path is not None and log_path.is_file():
        size = log_path.stat().st_size
        # its last run first; a restart that has not written its error yet leaves the run before
        tail = max(0, size - 8192)
        for start in dict.fromkeys((max(role.log_start, tail), tail)):  # the tail once if equal
            with log_path.open("rb") as log_file:
                log_file.seek(start)
                lines = log_file.read().decode(errors="replace").splitlines()
            for line in reversed(lines):
                if line.startswith("error: "):
                    return line.removeprefix("error: ")
    return f"exit code {code} — see {log_path}"
