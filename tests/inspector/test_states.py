"""Each configured policy's state with its figure against its limit (pure, `inspector.states`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from barfinex_cli.inspector.model import Portfolio, Position
from barfinex_cli.inspector.policies import parse_policies
from barfinex_cli.inspector.states import policy_states

NOW = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)
FILE = b"""
[risk]
per_trade_pct = 1
[size]
max_notional = 5000
[drawdown]
daily_loss_pct = 3
from_peak_pct = 10
on_daily_loss = "STAND_DOWN"
[activity]
max_trades_per_day = 4
max_losing_trades_per_day = 2
[cooldown]
after_loss_minutes = 30
[hold]
max_hold_minutes = 120
[exposure]
max_net_pct = 50
[correlation.groups.majors]
symbols = ["BTC/USDT", "ETH/USDT"]
max_open = 1
"""
FLAT = Portfolio(
    equity=Decimal(10_000), peak_equity=Decimal(10_000), day_start_equity=Decimal(10_000),
    positions=(), open_orders_notional=Decimal(0), trades_today=0, losing_trades_today=0,
    loss_streak=0, last_loss_at=None, realised_today=Decimal(0), stand_down_until=None,
)  # fmt: skip


def test_every_configured_policy_shows_ok_with_its_figure_against_its_limit() -> None:
    held = Position("BTC/USDT", "momentum", "long", Decimal(20), Decimal(100),
                    NOW - timedelta(minutes=45), runtime=True)  # fmt: skip
    states = policy_states(parse_policies(FILE, "p.toml"), replace(FLAT, positions=(held,)), NOW)
    assert states == {
        "stand_down": "ok",
        "daily_loss": "ok: down 0.00% today of daily_loss_pct 3%",
        "peak_drawdown": "ok: 0.00% below the peak of from_peak_pct 10%",
        "trades_per_day": "ok: 0 trades today of max_trades_per_day 4",
        "losing_trades_per_day": "ok: 0 losing trades today of max_losing_trades_per_day 2",
        "cooldown": "ok: no loss yet; after_loss_minutes 30",
        "net_exposure": "ok: net 20.0% of equity of max_net_pct 50%",
        "correlated_group:majors": "ok: 1 open of max_open 1",
        "risk_per_trade": "ok: judged per entry, per_trade_pct 1%",
        "position_size": "ok: judged per entry, max_notional 5000",
        "max_hold": "ok: longest held 45 min of max_hold_minutes 120",
    }


def test_a_breach_a_cooldown_and_a_stand_down_show_the_action_and_until_when() -> None:
    lost = NOW - timedelta(minutes=10)
    portfolio = replace(
        FLAT, equity=Decimal(9_600), trades_today=4, losing_trades_today=1,
        last_loss_at=lost, stand_down_until=datetime(9999, 12, 31, tzinfo=UTC),
    )  # fmt: skip
    states = policy_states(parse_policies(FILE, "p.toml"), portfolio, NOW, "operator: lunch")
    assert states["stand_down"] == "STAND_DOWN until resumed: operator: lunch"
    assert states["daily_loss"] == (
        "STAND_DOWN until 2024-01-03T00:00:00+00:00: down 4.00% today, at or past daily_loss_pct 3%"
    )
    assert states["trades_per_day"] == (
        "THROTTLE until 2024-01-03T00:00:00+00:00: 4 trades today, at max_trades_per_day 4"
    )
    assert states["cooldown"] == (
        "THROTTLE until 2024-01-02T12:20:00+00:00: cooling down after a loss: 20.0 of 30 "
        "minutes left"
    )
    assert states["peak_drawdown"] == "ok: 4.00% below the peak of from_peak_pct 10%"
