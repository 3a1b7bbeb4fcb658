"""Generate the stored vectorbt result the bar-level check compares `bfx backtest` with.

tests/kernel/backtest/test_vector_vectorbt.py must run without vectorbt (a bench-only dependency
with numba behind it), so this script ran once with vectorbt installed and wrote what vectorbt's
`Portfolio.from_signals` did on the plain SMA(10)/SMA(20) cross to
tests/kernel/backtest/fixtures/vectorbt_sma_cross.json: every trade's entry and exit candle,
prices, size and P&L, the final equity, and the versions that made it.

The same candles and conventions as `bfx backtest --detector-only`: 5,000 synthetic 1m BTC/USDT
candles (seed 7, from `market.synthetic`, deterministic on every machine); a cross on candle i's
close fills at candle i+1's open (the signals shifted by one, `price=open`); all-in sizing
(`size=inf`, fees included); 10 bps fees; 10,000 of starting cash; long only.

Usage: python benchmarks/vectorbt_fixture.py   (pip install -e ".[bench]" first)
"""

from __future__ import annotations

import json
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import vectorbt as vbt

from barfinex_cli.market.synthetic import generate_candles

OUT = Path(__file__).resolve().parents[1] / "tests/kernel/backtest/fixtures/vectorbt_sma_cross.json"
CANDLES, SEED, FEES, CASH = 5_000, 7, 0.001, 10_000.0


def main() -> None:
    rows = generate_candles("BTC/USDT", minutes=CANDLES, seed=SEED)
    times = np.array([r.open_ms for r in rows], dtype=np.int64)
    close = pd.Series([r.close for r in rows], dtype=float)
    open_ = pd.Series([r.open for r in rows], dtype=float)
    fast, slow = vbt.MA.run(close, 10), vbt.MA.run(close, 20)
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    pf = vbt.Portfolio.from_signals(
        close,
        entries.shift(1, fill_value=False),
        exits.shift(1, fill_value=False),
        price=open_,
        fees=FEES,
        init_cash=CASH,
        freq="1min",
    )
    trades = pf.trades.records_readable
    records = pf.trades.values  # the structured numpy records
    out = {
        "generator": "benchmarks/vectorbt_fixture.py",
        "versions": {
            "vectorbt": vbt.__version__,
            "numba": numba.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
        },
        "data": {
            "symbol": "BTC/USDT",
            "candles": CANDLES,
            "seed": SEED,
            "first_open_ms": int(times[0]),
        },
        "settings": {"fast": 10, "slow": 20, "fees": FEES, "init_cash": CASH, "size": "inf"},
        "final_equity": float(pf.value().iloc[-1]),
        "total_return": float(pf.total_return()),
        "trades": [
            {
                "entry_ms": int(times[int(r["entry_idx"])]),
                "exit_ms": int(times[int(r["exit_idx"])]),
                "size": float(r["size"]),
                "entry_price": float(r["entry_price"]),
                "exit_price": float(r["exit_price"]),
                "pnl": float(r["pnl"]),
                "open": bool(r["status"] == 0),
            }
            for r in records
        ],
    }
    assert len(trades) == len(out["trades"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"{len(out['trades'])} trades, final equity {out['final_equity']:.2f} -> {OUT}")


if __name__ == "__main__":
    main()
