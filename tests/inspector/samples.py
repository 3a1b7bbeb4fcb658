"""Sample intents and portfolios the policy and governor tests start from."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from barfinex_cli.inspector.model import Intent, Portfolio

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday
D = Decimal

INTENT = Intent(
    decision_id="d-1",
    strategy="trend",
    instance="trend-1",
    symbol="BTC/USDT",
    side="buy",
    kind="open",
    entry=D(100),
    stop=D(98),
    take_profit=D(106),
    size_hint=None,
    conviction=0.7,
    spread_bps=2.0,
    at=NOW,
)

FLAT = Portfolio(
    equity=D(10_000),
    peak_equity=D(10_000),
    day_start_equity=D(10_000),
    positions=(),
    open_orders_notional=D(0),
    trades_today=0,
    losing_trades_today=0,
    loss_streak=0,
    last_loss_at=None,
    realised_today=D(0),
    stand_down_until=None,
)
