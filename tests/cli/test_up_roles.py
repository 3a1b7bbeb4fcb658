"""`bfx up --roles`: the plan a host starts to join a stack elsewhere, its name in shared groups,
and the flow it counts from the bus streams when the audit store lives on another host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from barfinex_cli.cli.up import _plan, host_id
from barfinex_cli.cli.up_view import Counts, summary_of
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.runtime.settings import Settings
from conftest import REDIS_URL


def _options(**changes: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "replay": None, "speed": "60", "days": None, "live": False, "exchange": None,
        "symbols": None, "policy": None, "port": 8081, "history": None, "host": "127.0.0.1",
        "provider": None, "host_name": None, "remote_apps": 0,
    }  # fmt: skip
    options.update(changes)
    return options


def test_a_roles_host_plans_only_its_roles_and_its_advisor_joins_as_this_host(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "b")
    strategy = tmp_path / "mine.py"
    plan = _plan(settings, [strategy], {"detector", "advisor"}, _options(host_name="b"))
    assert [r.name for r in plan] == ["advisor", "detector:mine"]
    assert plan[0].env == {"BFX_ADVISOR__CONSUMER": "advisor.b"}
    assert plan[1].args == ("detector", "run", str(strategy), "--instance", "mine")


def test_the_first_host_waits_for_the_remote_roles_and_binds_where_they_reach_it(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "a")
    plan = _plan(
        settings, [tmp_path / "x.py"], None, _options(remote_apps=2, host="0.0.0.0")
    )  # fmt: skip
    provider = next(r for r in plan if r.name == "provider")
    args = list(provider.args)
    assert args[args.index("--wait-for-apps") + 1] == "5"  # detector, advisor, inspector + 2
    assert args[args.index("--host") + 1] == "0.0.0.0"


def test_the_host_name_is_stable_per_data_dir_and_distinct_between_two(tmp_path: Path) -> None:
    a, b = Settings(home=tmp_path / "a"), Settings(home=tmp_path / "b")
    assert host_id(a, None) == host_id(Settings(home=tmp_path / "a"), None)
    assert host_id(a, None) != host_id(b, None)
    assert host_id(a, "rack 1/node:2") == "rack-1-node-2"  # a valid consumer and app name


async def test_a_host_without_a_recorder_counts_the_flow_on_the_bus_streams(
    tmp_path: Path, redis_bus: Any
) -> None:
    settings = Settings(home=tmp_path / "b", namespace=redis_bus.namespace)
    candle = CandleClosed(
        exchange="x", symbol="BTC/USDT", timeframe="1m", open_time="2024-01-01T00:00:00Z",
        open=1, high=1, low=1, close=1, volume=1,
    )  # fmt: skip
    await redis_bus.publish_many([make_event(candle, source="test") for _ in range(3)])
    counts = Counts(settings, REDIS_URL, recorded=False)
    summary = summary_of(settings, None, counts, REDIS_URL)
    assert summary["counted_from"] == "bus streams"
    assert summary["candles"] == 3 and summary["events"] == 3
    recorded = Counts(settings, REDIS_URL, recorded=True)  # no audit store here yet
    assert recorded.source == "audit store" and recorded() == {}
