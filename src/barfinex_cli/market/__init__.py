"""Market data that works with no provider running: files, synthetic market, candles, integrity."""
