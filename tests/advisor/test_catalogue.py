"""Every advisor event type in the catalogue comes out of the advisor in some real situation.

The test drives the pipeline (and the service's intake) through the situations that produce each
type, collects what came out, and fails for a catalogue type nothing produced: a type the advisor
has no use for must leave the catalogue rather than stay as decoration. The two training types
come out of `advisor.training.train`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from barfinex_cli.advisor.context import MarketContext
from barfinex_cli.advisor.features import WINDOW
from barfinex_cli.advisor.llm import LlmOptions, LlmStage
from barfinex_cli.advisor.models import RuleScorer
from barfinex_cli.advisor.pipeline import Pipeline
from barfinex_cli.advisor.service import Advisor
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.advisor.training import TrainConfig, TrainingSignal, train
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts import advisor as contracts
from barfinex_cli.contracts.catalog import CATALOG
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import LiveClock
from barfinex_cli.runtime.config import AdvisorConfig

KEY = ("paper", "BTC/USDT", "1m")
GOOD = {"bias": "long", "sizing_multiplier": 1.0, "reasoning": "The trend holds."}
INVENTED = {"bias": "long", "sizing_multiplier": 1.0, "reasoning": "Price 1234567 is the floor."}


async def _pipeline_types(
    make_context: Callable[..., MarketContext], make_signal: Callable[..., SignalView]
) -> set[str]:
    seen: set[str] = set()
    config = AdvisorConfig()

    async def run(pipeline: Pipeline, ctx: MarketContext, sig: SignalView) -> None:
        result = await pipeline.run(sig, ctx.snapshot(KEY))
        seen.update(p.event_type for p in result.events)

    plain = Pipeline(config, scorer=RuleScorer())
    await run(plain, make_context(shape="trend"), make_signal())  # a decision, llm skipped
    await run(plain, make_context(shape="burst"), make_signal())  # the regime rotates
    await run(plain, make_context(60), make_signal(59))  # too few candles for the features
    await run(plain, make_context(), make_signal(210))  # stale context: quality blocks
    await run(plain, make_context(spread_pct=0.6), make_signal())  # spread
    mock = {"mock_response": json.dumps(INVENTED)}
    inventive = Pipeline(config, scorer=RuleScorer(),
                         llm=LlmStage(LlmOptions(models=("gpt-4o-mini",), extra=mock)))  # fmt: skip
    await run(inventive, make_context(), make_signal())  # hallucination
    prose = {"mock_response": "Buy."}
    failing = Pipeline(config, scorer=RuleScorer(),
                       llm=LlmStage(LlmOptions(models=("gpt-4o-mini", "gpt-4o"), retries=0,
                                               extra=prose)))  # fmt: skip
    await run(failing, make_context(), make_signal())  # failed, switched, skipped
    return seen


async def _service_types(make_signal: Callable[..., SignalView]) -> set[str]:
    """The intake: a flip signal is dropped; a signal the down provider must warm is held."""
    bus = MemoryBus("catalogue")
    client = GatewayClient("http://127.0.0.1:9", None, retries=0, timeout=1)
    config = AdvisorConfig(serve_api=False, join_registry=False, heartbeat_s=60, retry_s=0.05)
    advisor = Advisor(config, bus=bus, clock=LiveClock(), client=client)
    seen: set[str] = set()
    tail = bus.tail(["advisor.*"], block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(advisor.run(stop))
    try:
        await asyncio.wait_for(advisor.ready.wait(), 10)
        for sig in (make_signal(action="flip", event_id="x"), make_signal(event_id="y")):
            await bus.publish(make_event(sig.signal, source="detector/m"))
        async with asyncio.timeout(10):
            async for delivery in tail:
                seen.add(delivery.type)
                if {"advisor.signal.dropped", "advisor.stage.failed"} <= seen:
                    break
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        await bus.close()
    return seen


def _training_types() -> set[str]:
    frame = rows_frame(generate_candles("BTC/USDT", minutes=3000))
    rng = np.random.default_rng(1)
    opens = frame["open_ms"].to_list()[WINDOW:]
    signals = [TrainingSignal(t, "long" if rng.random() < 0.5 else "short", 2.0)
               for t in opens[::3]]  # fmt: skip
    config = TrainConfig(min_regime_samples=30)
    now = datetime(2024, 2, 1, tzinfo=UTC)
    result = train(frame, signals, strategy="s", timeframe="1m", now=now, config=config)
    return {e.event_type for e in result.events}


async def test_every_advisor_type_in_the_catalogue_is_emitted_in_a_real_situation(
    make_context: Any, make_signal: Any
) -> None:
    produced = await _pipeline_types(make_context, make_signal)
    produced |= await _service_types(make_signal)
    produced |= _training_types()
    catalogue = {name for name in CATALOG if name.startswith("advisor.")}
    assert catalogue - produced == set(), "catalogue types nothing emits: remove them"
    assert produced <= catalogue
    assert {m.event_type for m in contracts.TRAINING_EVENTS} <= produced
