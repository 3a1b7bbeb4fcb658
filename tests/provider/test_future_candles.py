"""A replayed candle dated far ahead is refused by the provider with an incident, end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import Kernels


def _file_with_a_row_in_2100(folder: Path) -> Path:
    rows = ["time,open,high,low,close,volume"]
    for i in range(200):
        hour, minute = divmod(i, 60)
        rows.append(f"2024-01-01T{hour:02d}:{minute:02d}:00Z,100,101,99,100,5")
    rows.append("2100-01-01T00:00:00Z,100,101,99,100,5")
    path = folder / "BTC_USDT-1m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


async def test_a_replayed_candle_dated_2100_is_refused_with_an_incident_and_never_stored(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    source = _file_with_a_row_in_2100(tmp_path)
    settings = load_settings(home=tmp_path / "home", namespace=namespace, bus="memory", token="t")
    options = ProviderOptions(
        replay=source, symbols=("BTC/USDT",), timeframes=("1m",), speed=None, history=100,
        exit_at_end=True, serve=False,
    )  # fmt: skip
    provider = await (await kernels(settings)).provider(options)
    await asyncio.wait_for(provider.run(asyncio.Event()), 60)

    assert provider.runtime is not None and provider.runtime.pipeline.refused == 1
    assert provider.runtime.clock_ms == 1_704_067_200_000 + 200 * 60_000  # not moved to 2100
    with AuditStore(settings.audit_path) as audit:
        counts = dict(audit.types())
        incidents = audit.query(["provider.incident.*"], limit=None)
    assert counts["market.candle"] == 100  # the 100 streamed candles, not the refused one
    assert [e.type for e in incidents] == ["provider.incident.escalated"]
    reason = incidents[0].payload.reason
    assert "2100-01-01T00:00:00Z" in reason and "max_candle_ahead_s" in reason
    with MarketStore(settings.market_path) as market:
        rows = market.candles(SeriesKey("replay", "BTC/USDT", "1m"))
    assert len(rows) == 200 and rows[-1].open_ms == 1_704_067_200_000 + 199 * 60_000
