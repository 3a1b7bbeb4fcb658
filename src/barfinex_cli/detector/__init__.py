"""The detector role: strategy files of weighted rules, evaluated live and over history.

`strategy` is the file format (Strategy, Rule), `indicators` the vocabulary strategies write with
(`from barfinex_cli.detector import indicators as ta`), `loader` loads a file the user names,
`engine` evaluates over a frame (scan, backtest) and `engine_incremental` one closed candle at a
time (live) with identical results; `lookahead` proves a strategy does not read the future.
Nothing here does work at import.
"""
