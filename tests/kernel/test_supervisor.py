"""The supervisor restarts a crashing role with backoff, gives up on one that keeps crashing,
never restarts one that refused to start, ends the stack when a role finishes, and stops the
rest in reverse order."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from barfinex_cli.kernel.supervisor import RoleCrashing, RoleProcess, RoleRefused, Supervisor


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
