"""The generation counters a candle cache keys on, kept by SQLite triggers in market.db.

Per series, `generation` counts every candle written or deleted, and `rewrites` those writes
that were not an append past the series' last candle (a replaced, updated or deleted candle).
Triggers keep them in the writing transaction, whoever writes: MarketStore, the sqlite3 shell,
an older bfx. `store_meta.id` is random per file, so a market.db deleted and imported again is
never taken for the one a cache was built from (see `market/candle_cache.py`, docs/data.md).
The cost is on bulk writes: SQLite's insert of 1M candles measured 2.2-4.3x slower with the
triggers (benchmarks/market_load.py); a live provider's few candles a minute do not notice.
"""

from __future__ import annotations

import sqlite3

GENERATIONS = """
CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS candle_generations (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    generation INTEGER NOT NULL, rewrites INTEGER NOT NULL,
    PRIMARY KEY (exchange, symbol, timeframe)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS candles_inserted BEFORE INSERT ON candles BEGIN
    INSERT INTO candle_generations VALUES (
        NEW.exchange, NEW.symbol, NEW.timeframe, 1,
        EXISTS (SELECT 1 FROM candles WHERE exchange = NEW.exchange AND symbol = NEW.symbol
                AND timeframe = NEW.timeframe AND open_ms >= NEW.open_ms))
    ON CONFLICT DO UPDATE SET generation = generation + 1, rewrites = rewrites + excluded.rewrites;
END;
CREATE TRIGGER IF NOT EXISTS candles_updated AFTER UPDATE ON candles BEGIN
    INSERT INTO candle_generations VALUES (OLD.exchange, OLD.symbol, OLD.timeframe, 1, 1)
    ON CONFLICT DO UPDATE SET generation = generation + 1, rewrites = rewrites + 1;
    INSERT INTO candle_generations VALUES (NEW.exchange, NEW.symbol, NEW.timeframe, 1, 1)
    ON CONFLICT DO UPDATE SET generation = generation + 1, rewrites = rewrites + 1;
END;
CREATE TRIGGER IF NOT EXISTS candles_deleted AFTER DELETE ON candles BEGIN
    INSERT INTO candle_generations VALUES (OLD.exchange, OLD.symbol, OLD.timeframe, 1, 1)
    ON CONFLICT DO UPDATE SET generation = generation + 1, rewrites = rewrites + 1;
END;
"""
"""Tables and triggers, created once per file by `MarketStore._add_generations`.

The insert trigger runs BEFORE the row goes in, so an INSERT OR REPLACE of a candle already
held still sees it (and counts a rewrite): SQLite fires no delete trigger for the row REPLACE
removes unless recursive triggers are on.
"""


def statements(script: str) -> list[str]:
    """Split a script of CREATE statements (triggers hold `;` inside BEGIN ... END)."""
    found: list[str] = []
    pending = ""
    for line in script.strip().splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    return found
