"""A detector's `/metrics` is its own prometheus_client registry over its live counters."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.service import Detector
from barfinex_cli.market.synthetic import default_dataset
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import SimClock
from barfinex_cli.runtime.config import DetectorConfig

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"


async def test_metrics_render_evaluations_signals_rates_and_latency_per_instance() -> None:
    path = STRATEGIES / "trend_ema_adx.py"
    strategy = load_strategy(path)
    bus = MemoryBus("metrics")
    async with GatewayClient("http://127.0.0.1:1", None) as client:
        made = [
            Detector(DetectorConfig(strategy=path, instance=name), strategy=strategy, bus=bus,
                     clock=SimClock(), client=client)
            for name in ("a", "b")
        ]  # fmt: skip
        first, second = made
        rows = default_dataset(list(strategy.symbols)[:1], days=0.5)[strategy.symbols[0]]
        for row in rows[:300]:
            first.engine.on_candle(strategy.symbols[0], row)
        first.signals, first.latency.samples = 4, [10.0, 20.0, 30.0]
        text = generate_latest(first.prometheus()).decode()
        labels = f'instance="a",strategy="{strategy.name}"'
        assert f"bfx_detector_evaluations_total{{{labels}}} 300.0" in text
        assert f"bfx_detector_signals_total{{{labels}}} 4.0" in text
        median = f'quantile="0.5",strategy="{strategy.name}"'
        assert f'bfx_detector_eval_latency_us{{instance="a",{median}}} 20.0' in text
        assert "bfx_detector_rule_firing_rate{" in text
        assert 'instance="a"' not in generate_latest(second.prometheus()).decode()
    await bus.close()
