"""Exit signals: a strategy's close or reduce rule becomes a decision of that kind at stage 8.

Pure over `make_exit` (the side that takes the signal's direction off, no stop or take-profit,
a reduce's share of the held position), and once through the running advisor on real Redis,
which decides such a signal at once instead of dropping it as unsupported.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from advisor.conftest import KEY, context, signal
from advisor.test_service import _provider_config, _Running, _signal, bus, running, settings
from barfinex_cli.advisor.service import Advisor
from barfinex_cli.advisor.stages.intent import make_exit
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.runtime.config import AdvisorConfig
from barfinex_cli.runtime.settings import Settings
from conftest import Kernels
from polling import until

__all__ = ["bus", "running", "settings"]  # the fixtures, shared with test_service


@pytest.mark.parametrize(
    ("direction", "held", "side", "size"),
    [("long", 2.0, "sell", "2.0"), ("short", -3.0, "buy", "3.0"), ("long", -3.0, "sell", "0.0")],
)
def test_a_close_signal_exits_the_side_it_names_with_no_stop_or_take_profit(
    direction: str, held: float, side: str, size: str
) -> None:
    ctx = context()
    ctx.set_position(KEY[0], KEY[1], held)
    view = signal(direction=direction, action="close")
    decision = make_exit(view, ctx.snapshot(KEY), 0.5)
    assert (decision.kind, decision.side, decision.order_type) == ("close", side, "market")
    assert (decision.stop, decision.take_profit) == (Decimal(0), Decimal(0))
    assert decision.size == Decimal(size)  # only the side the signal exits counts as held
    assert decision.entry == Decimal(repr(round(ctx.snapshot(KEY).last_close, 10)))
    assert decision.signal_id == view.id and decision.strategy == "momentum"
    assert (
        decision.stages[-1].stage == "intent"
        and "entry stages not run" in decision.stages[-1].detail
    )


def test_a_reduce_signal_suggests_its_share_of_the_held_position() -> None:
    ctx = context()
    ctx.set_position(KEY[0], KEY[1], 2.0)
    decision = make_exit(signal(action="reduce"), ctx.snapshot(KEY), 0.25)
    assert (decision.kind, decision.side, decision.size) == ("reduce", "sell", Decimal("0.5"))


async def test_the_advisor_decides_a_close_signal_at_once_instead_of_dropping_it(
    settings: Settings, kernels: Kernels, bus: RedisStreamsBus, running: _Running, tmp_path: Path
) -> None:
    provider = await running.start(await (await kernels(settings)).provider(_provider_config()))
    advisor: Advisor = await running.start(await (await kernels(settings)).advisor(
        AdvisorConfig(provider_url=provider.gateway_url, port=0, heartbeat_s=0.2)
    ))  # fmt: skip
    exit_signal = _signal().model_copy(update={"action": "close"})
    event = make_event(exit_signal, source="detector/manual")
    await bus.publish(event)
    await until(lambda: advisor.decisions >= 1 or advisor.dropped >= 1)
    assert (advisor.decisions, advisor.dropped) == (1, 0)
    decision = advisor.find(event.id).result
    assert decision is not None and isinstance(decision.decision, DecisionMade)
    made = decision.decision
    assert (made.kind, made.side, made.symbol) == ("close", "sell", "BTC/USDT")
