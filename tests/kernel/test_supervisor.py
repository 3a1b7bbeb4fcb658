"""The supervisor restarts a crashing role with backoff, gives up on one that keeps crashing,
never restarts one that refused to start, ends the stack when a role finishes, and stops the
rest in reverse order, killing one that has not stopped within the grace (or at once when asked
to hurry)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from barfinex_cli.kernel.supervisor import (
    RoleCrashing,
    RoleProcess,
    RoleRefused,
    RootFailed,
    Supervisor,
)
from polling import until


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BFX_HOME": str(tmp_path / "home")}


async def test_a_role_that_keeps_crashing_is_restarted_then_reported(tmp_path: Path) -> None:
    crashing = RoleProcess(  # no Redis answers there: exits 3 every time
        "bad", ("events", "tail"), env={"BFX_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    supervisor = Supervisor(
        [crashing], _env(tmp_path), tmp_path / "logs", max_restarts=2, backoff_s=0.05
    )
    await supervisor.start()
    with pytest.raises(RoleCrashing, match="bad crashed 3 times"):
        await asyncio.wait_for(supervisor.watch(asyncio.Event()), 120)
    await supervisor.stop()
    assert crashing.restarts == 2 and crashing.exit_codes == [3, 3, 3]
    assert crashing.log_path is not None and "not reachable" in crashing.log_path.read_text()


async def test_a_role_that_refuses_to_start_is_not_restarted_and_its_error_is_reported(
    tmp_path: Path,
) -> None:
    refused = RoleProcess("bad", ("events", "tail", "--count", "0"))  # a mistake: exits 2
    supervisor = Supervisor([refused], _env(tmp_path), tmp_path / "logs", backoff_s=0.05)
    await supervisor.start()
    with pytest.raises(RoleRefused, match=r"^bad refused to start: .*count") as raised:
        await asyncio.wait_for(supervisor.watch(asyncio.Event()), 120)
    await supervisor.stop()
    assert refused.restarts == 0 and refused.exit_codes == [2] and refused.state == "refused"
    assert "\n" not in str(raised.value) and raised.value.exit_code == 2


async def test_a_role_that_finishes_ends_the_stack_and_the_rest_stop(tmp_path: Path) -> None:
    waiting = RoleProcess("tail", ("events", "tail"))
    done = RoleProcess("once", ("version",))
    env = {**_env(tmp_path), "BFX_BUS": "memory"}
    supervisor = Supervisor([waiting, done], env, tmp_path / "logs")
    stop = asyncio.Event()

    async def tailing(role: RoleProcess) -> None:  # start the next one once it reads the bus
        for _ in range(1200):
            if role is not waiting or "tailing" in (role.log_path or Path()).read_text():
                return
            await asyncio.sleep(0.05)

    await supervisor.start(tailing)
    await asyncio.wait_for(supervisor.watch(stop), 120)
    assert stop.is_set() and supervisor.finished is done and done.state == "finished"
    await asyncio.wait_for(supervisor.stop(), 60)
    assert waiting.state == "stopped" and waiting.process is not None
    assert waiting.process.returncode == 0  # stopped with SIGINT: a clean exit, not a kill


def _unreachable(name: str, port: int) -> RoleProcess:
    """A role that exits 3 with its own one-line error naming the Redis at `port`."""
    return RoleProcess(
        name, ("events", "tail"), env={"BFX_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    )


async def test_a_root_that_fails_to_start_stops_the_stack_with_its_own_error_and_code(
    tmp_path: Path,
) -> None:
    root, downstream = _unreachable("provider", 1), RoleProcess("detector:x", ("version",))
    supervisor = Supervisor([root, downstream], _env(tmp_path), tmp_path / "logs", root="provider")

    async def until_exit(role: RoleProcess) -> None:  # as `bfx up` waits for the gateway
        assert role.process is not None
        if role is root:
            await asyncio.wait_for(role.process.wait(), 60)

    with pytest.raises(RootFailed) as raised:
        await supervisor.start(until_exit)
    await supervisor.stop()
    message = str(raised.value)
    assert message.startswith("provider failed to start: ") and "127.0.0.1:1" in message
    assert "\n" not in message and raised.value.exit_code == 3
    assert downstream.process is None and root.restarts == 0  # nothing started after it


async def test_roles_crashing_while_the_root_is_down_report_the_roots_error(
    tmp_path: Path,
) -> None:
    root, downstream = _unreachable("provider", 1), _unreachable("detector:x", 2)
    supervisor = Supervisor(
        [root, downstream], _env(tmp_path), tmp_path / "logs", root="provider",
        max_restarts=1, backoff_s=0.05,
    )  # fmt: skip
    await supervisor.start()
    with pytest.raises(RootFailed) as raised:
        await asyncio.wait_for(supervisor.watch(asyncio.Event()), 120)
    await supervisor.stop()
    message = str(raised.value)  # whichever gave up first, the provider's own error is shown
    assert message.startswith("provider ") and "127.0.0.1:1" in message
    assert "127.0.0.1:2" not in message and raised.value.exit_code == 3


def _deaf(tmp_path: Path) -> RoleProcess:
    """A role whose process never sees SIGINT (blocked from its start): it cannot stop itself."""
    site = tmp_path / "deaf"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
    )
    return RoleProcess("deaf", ("events", "tail"), env={"PYTHONPATH": str(site)})


async def _tailing(role: RoleProcess) -> None:
    for _ in range(1200):
        if "tailing" in (role.log_path or Path()).read_text():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{role.name} never started tailing")


async def test_a_role_that_does_not_stop_within_the_grace_is_killed(tmp_path: Path) -> None:
    deaf = _deaf(tmp_path)
    env = {**_env(tmp_path), "BFX_BUS": "memory"}
    supervisor = Supervisor([deaf], env, tmp_path / "logs", stop_timeout_s=0.5)
    await supervisor.start(_tailing)
    await asyncio.wait_for(supervisor.stop(), 30)
    assert deaf.state == "stopped" and deaf.stop_code == -9


async def test_hurry_kills_a_stopping_role_without_waiting_for_the_grace(tmp_path: Path) -> None:
    deaf = _deaf(tmp_path)
    env = {**_env(tmp_path), "BFX_BUS": "memory"}
    supervisor = Supervisor([deaf], env, tmp_path / "logs", stop_timeout_s=600)
    await supervisor.start(_tailing)
    stopping = asyncio.create_task(supervisor.stop())
    await until(lambda: deaf.state == "stopping", 30, what="the stop to begin")
    supervisor.hurry()  # a second Ctrl-C
    await asyncio.wait_for(stopping, 30)
    assert deaf.state == "stopped" and deaf.stop_code == -9


async def test_a_role_that_stops_on_sigint_reports_its_exit_code_as_its_stop_code(
    tmp_path: Path,
) -> None:
    tail = RoleProcess("tail", ("events", "tail"))
    env = {**_env(tmp_path), "BFX_BUS": "memory"}
    supervisor = Supervisor([tail], env, tmp_path / "logs")
    await supervisor.start(_tailing)
    await asyncio.wait_for(supervisor.stop(), 60)
    assert tail.stop_code == 0
