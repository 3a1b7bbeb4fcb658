"""Backtests and optimisation on the same role code as the live stack (see docs/backtest.md)."""
