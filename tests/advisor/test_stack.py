"""The whole advisor pipeline over the signals of a replay, on the kernel's in-process stack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.kernel.stack import run_in_process
from barfinex_cli.runtime.config import AdvisorConfig, DetectorConfig, ProviderConfig
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from strategy_files import momentum

MOMENTUM = momentum("momentum")


async def test_every_signal_of_a_replay_ends_in_a_decision_or_a_rejection_traced_to_it(
    tmp_path: Path, namespace: str
) -> None:
    strategy = tmp_path / "momentum.py"
    strategy.write_text(MOMENTUM)
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token="t0ken")
    provider = ProviderConfig(
        symbols=("BTC/USDT",),
        timeframes=("1m",),
        days=0.3,
        history=200,
        speed=None,
        exit_at_end=True,
        serve=False,
    )
    detector = DetectorConfig(
        strategy=strategy, instance="m", serve_health=False, join_registry=False
    )
    advisor = AdvisorConfig(serve_api=False, join_registry=False)
    async with Kernel(settings) as kernel:
        run = await asyncio.wait_for(
            run_in_process(
                kernel, provider, [detector], asyncio.Event(), advisor_configs=[advisor]
            ),
            120,
        )
        signals = run.detectors[0].signals
        assert signals > 0
        assert run.advisors[0].signals_seen == signals
    with AuditStore(settings.audit_path) as audit:
        sig_events: list[Envelope[Any]] = audit.query(["detector.signal"], limit=None)
        ends = audit.query(["advisor.decision", "advisor.decision.rejected"], limit=None)
        assert len(ends) == len(sig_events) == signals
        by_id = {s.id: s for s in sig_events}
        for end in ends:
            signal = by_id[end.parent_id or ""]  # each outcome is a child of its signal
            assert end.trace_id == signal.trace_id
            assert end.payload.signal_id == signal.id
        decision = next((e for e in ends if e.type == "advisor.decision"), None)
        assert decision is not None
        chain = [e.type for e in audit.trace(decision.id)]
        assert chain[0] == "market.candle"
        assert {
            "detector.signal",
            "advisor.context.fetched",
            "advisor.quality.passed",
            "advisor.ml.scored",
            "advisor.conviction.calibrated",
            "advisor.llm.skipped",
            "advisor.validation.passed",
            "advisor.attribution",
        } <= set(chain)
        assert [s.stage for s in decision.payload.stages] == [
            "context",
            "quality",
            "ml",
            "conviction",
            "calibration",
            "llm",
            "validation",
            "intent",
        ]
