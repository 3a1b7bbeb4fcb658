"""Bar-level check: on a plain SMA(10/20) cross, the detector-only run trades as vectorbt does.

The fixture is vectorbt's `Portfolio.from_signals` on the same 5,000 synthetic candles with the
same conventions (fill at the next open, all-in, 10 bps), generated once by
benchmarks/vectorbt_fixture.py (it records the versions); this test needs no vectorbt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.kernel.backtest.vector import run_vector
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles

HERE = Path(__file__).resolve().parent
SMA = HERE.parents[2] / "strategies" / "sma_cross.py"


def test_entries_exits_prices_and_pnl_equal_vectorbt_from_signals() -> None:
    fixture = json.loads((HERE / "fixtures" / "vectorbt_sma_cross.json").read_text())
    data, settings = fixture["data"], fixture["settings"]
    rows = generate_candles(data["symbol"], minutes=data["candles"], seed=data["seed"])
    assert rows[0].open_ms == data["first_open_ms"]
    result = run_vector(
        load_strategy(SMA), rows_frame(rows), exchange="synthetic",
        fees_bps=settings["fees"] * 1e4, slippage_bps=0, initial_equity=settings["init_cash"],
    )  # fmt: skip
    theirs = fixture["trades"]
    ours = result.trades
    assert len(ours) == len(theirs) > 100
    last_open = rows[-1].open_ms
    for mine, vbt in zip(ours, theirs, strict=True):
        assert mine.entry_ms == vbt["entry_ms"]
        if vbt["open"]:  # vectorbt marks an open trade at the last candle; bfx at its close
            assert mine.exit_reason == "open" and vbt["exit_ms"] == last_open
            assert mine.exit_ms == last_open + 60_000
        else:
            assert mine.exit_ms == vbt["exit_ms"]
        assert mine.entry_price == pytest.approx(vbt["entry_price"], rel=1e-12)
        assert mine.exit_price == pytest.approx(vbt["exit_price"], rel=1e-12)
        assert mine.quantity == pytest.approx(vbt["size"], rel=1e-9)
        assert mine.pnl == pytest.approx(vbt["pnl"], rel=1e-7, abs=1e-7)
    assert result.curve is not None
    assert float(result.curve.equity[-1]) == pytest.approx(fixture["final_equity"], rel=1e-9)
