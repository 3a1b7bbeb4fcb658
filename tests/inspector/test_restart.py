"""A killed inspector restarts on its store: protection in place, nothing doubled, re-arm first.

The first inspector runs as `bfx inspector run` in a subprocess and is killed with SIGKILL while
it manages a position; the second starts in-process on the same data directory and bus.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from barfinex_cli.inspector.execution import client_order_id
from inspector.conftest import Market, StartInspector, until


def _spawn(market: Market, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BFX_TOKEN": "t0ken", "BFX_REDIS_URL": market.settings.redis_url or ""}
    command = [
        sys.executable, "-m", "barfinex_cli", "--data-dir", str(home),
        "--namespace", market.settings.namespace, "inspector", "run",
        "--provider", market.url, "--port", "0", "--clock", "wall",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_a_killed_inspector_restarts_with_its_protection_and_re_arms_before_any_entry(
    market: Market, start_inspector: StartInspector
) -> None:
    home = market.settings.home
    process = _spawn(market, home)
    try:

        async def registered() -> bool:
            return any(a.name == "inspector" for a in await market.client.list_apps())

        await until(registered, 60)
        btc = await market.decide("BTC/USDT")
        stop_id = client_order_id(btc.id, "stop_loss", 1)
        take_id = client_order_id(btc.id, "take_profit", 1)

        async def both_open() -> bool:
            live = {o.client_order_id for o in await market.client.orders("paper", open_only=True)}
            return {stop_id, take_id} <= live

        await until(both_open, 60)
    finally:
        process.send_signal(signal.SIGKILL)  # kill -9 mid-management: nothing of its own runs
        process.wait(30)
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    # while it is down: its take-profit disappears, and a new decision arrives
    await market.client.cancel_order(take_id)
    eth = await market.decide("ETH/USDT", entry="50", stop="49", take_profit="52")

    second, _, _ = await start_inspector()
    eth_entry = client_order_id(eth.id, "entry")

    async def eth_placed() -> bool:
        return any(o.client_order_id == eth_entry for o in await market.client.orders("paper"))

    await until(eth_placed)
    orders = await market.client.orders("paper")
    ids = [o.client_order_id for o in orders]
    assert ids.count(client_order_id(btc.id, "entry")) == 1  # nothing placed twice
    assert ids.count(stop_id) == 1
    rearmed = client_order_id(btc.id, "take_profit", 2)
    assert rearmed in ids
    # the provider numbers orders as they arrive: the re-armed protection came before the entry
    seq = {o.client_order_id: int((o.order_id or "paper-0").split("-")[1]) for o in orders}
    assert seq[rearmed] < seq[eth_entry]
    assert second.log.index("re-armed BTC/USDT") < second.log.index("entries open")
    live = {o.client_order_id for o in await market.client.orders("paper", open_only=True)}
    btc_guards = {i for i in live if i.startswith(f"i-{btc.id}-")}
    assert len([i for i in btc_guards if "-sl" in i]) == 1  # the same stop, never a second
    assert len([i for i in btc_guards if "-tp" in i]) == 1
    assert [p.symbol for p in second.store.positions()] == ["BTC/USDT", "ETH/USDT"]
