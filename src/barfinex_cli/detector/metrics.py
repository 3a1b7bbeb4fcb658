"""The detector's `/metrics`: a prometheus_client collector over the instance's own counters.

The counts live on the `Detector` (they feed `/health` and `detector.metrics` events too), so a
custom collector reads them at scrape time rather than keeping a second copy in Counter objects.
Each instance has its own registry: several detectors in one process stay apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from barfinex_cli.detector.service import Detector


class DetectorCollector(Collector):
    """Report one detector instance's evaluations, signals, firing rates and latency."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def collect(self) -> Iterator[Metric]:
        d = self.detector
        names, values = ["instance", "strategy"], [d.instance, d.strategy.name]
        counters = (
            ("bfx_detector_evaluations", "Closed candles evaluated.", d.engine.evaluations),
            ("bfx_detector_signals", "Signals published.", d.signals),
            ("bfx_detector_suppressed", "Signals muted by a throttle.", d.suppressed),
        )
        for name, text, value in counters:
            counter = CounterMetricFamily(name, text, labels=names)
            counter.add_metric(values, value)
            yield counter
        rates = GaugeMetricFamily(
            "bfx_detector_rule_firing_rate",
            "Share of evaluations in which a rule held.",
            labels=[*names, "rule"],
        )
        for rule, rate in sorted(d.engine.firing_rates().items()):
            rates.add_metric([*values, rule], rate)
        yield rates
        latency = GaugeMetricFamily(
            "bfx_detector_eval_latency_us",
            "Evaluation latency per candle.",
            labels=[*names, "quantile"],
        )
        for q in (0.5, 0.99):
            latency.add_metric([*values, str(q)], round(d.latency.quantile(q), 3))
        yield latency


def registry_of(detector: Detector) -> CollectorRegistry:
    """Return a registry holding only this detector's collector."""
    from barfinex_cli.runtime.health import TrimmedCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DetectorCollector(detector))
    registry.register(TrimmedCollector(detector.bus))
    return registry
