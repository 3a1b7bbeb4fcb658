"""A window of a stored paper broker's orders against the full listing, as ratios.

A `PaperBroker` with a store (paper.db in a temporary directory) places `--orders` market orders
(default 8,000: the first half in account `old`, the second in `paper`), so memory holds only the
latest closed ones (`KEEP_CLOSED`) and the rest live in the store. Then, each the median of
`--repeat` calls:

- `orders()`: the full listing, every stored order read and parsed (the baseline);
- `orders(limit=500)`: the studio's poll; memory holds the whole window, nothing is read;
- `orders("old", limit=500)`: a window of dropped orders, read from the store (500 rows).

Every answer is checked against the full listing before a figure is printed. Target: both
windows at least 10 times faster than the full listing at 8,000 orders.

Usage: python benchmarks/orders_window.py [--orders N] [--repeat K]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.orders import OrderState
from barfinex_cli.provider.connectors.base import OrderRequest
from barfinex_cli.provider.paper.broker import KEEP_CLOSED, PaperBroker
from barfinex_cli.store.broker import BrokerStore
from barfinex_cli.store.market import TradeRow

WINDOW = 500


async def _median_ms(call: Callable[[], Awaitable[list[OrderState]]], repeat: int) -> float:
    spent = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - start) * 1000)
    return statistics.median(spent)


async def _run(orders: int, repeat: int, directory: Path) -> None:
    async def emit(event: Envelope[Any]) -> None:
        return None

    cash = {"USDT": Decimal(10_000_000)}
    store = BrokerStore(directory / "paper.db")
    broker = PaperBroker(emit, accounts={"old": cash, "paper": cash}, store=store)
    broker.on_trade("BTC/USDT", TradeRow(0, "t0", 100.0, 1e9, "buy"))
    started = time.perf_counter()
    for i in range(orders):
        account = "old" if i < orders // 2 else "paper"
        request = OrderRequest(f"o{i:06}", account, "BTC/USDT", "buy", "market", Decimal("0.01"))
        await broker.place(request)
    placed_s = time.perf_counter() - started
    every = await broker.orders()
    assert len(every) == orders
    assert await broker.orders(limit=WINDOW) == every[-WINDOW:]
    old = [o for o in every if o.account == "old"]
    assert await broker.orders("old", limit=WINDOW) == old[-WINDOW:]

    full = await _median_ms(broker.orders, repeat)
    held = await _median_ms(lambda: broker.orders(limit=WINDOW), repeat)
    stored = await _median_ms(lambda: broker.orders("old", limit=WINDOW), repeat)
    store.close()
    print(f"{orders:,} orders placed in {placed_s:.1f} s; memory keeps {KEEP_CLOSED:,} closed")
    print(f"{'call':<28}{'median ms':>12}{'x faster':>10}")
    print(f"{'orders()':<28}{full:>12.1f}{1.0:>10.1f}")
    print(f"{'orders(limit=500)':<28}{held:>12.2f}{full / held:>10.1f}")
    print(f"{'orders(old, limit=500)':<28}{stored:>12.1f}{full / stored:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=8_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_run(args.orders, args.repeat, Path(directory)))


if __name__ == "__main__":
    main()
