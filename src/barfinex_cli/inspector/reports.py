"""What the inspector reports: policy states, KPIs, positions with their guards, health.

Read-only views over the `Inspector`'s state and store, for the API (`/kpi`, `/positions`,
`/health`, `/api/v1/status`), `bfx inspector status` and the periodic `inspector.kpi`.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from barfinex_cli.bus.base import trimmed_rows
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.inspector import kpi, states

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")


class Reports:
    """The inspector's read-only views, for the API, the CLI and `inspector.kpi`."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    def policy_states(self) -> dict[str, str]:
        """Return each configured policy's state now, with its figure against its limit."""
        counters = self.ins.store.counters()
        return states.policy_states(
            self.ins.governor.policies,
            self.ins.portfolio(),
            self.ins.clock.now(),
            counters.stand_down_reason,
        )

    def kpi(self) -> Any:
        """Return the KPI event payload as things stand."""
        counters = self.ins.roll_day()
        strategy_of = {
            str(r["decision_id"]): str(r["strategy"]) for r in self.ins.store.decisions()
        }
        now = self.ins.clock.now()
        drawdown = self.ins.governor.policies.rules.drawdown
        return kpi.report(
            account=self.ins.config.account,
            currency=self.ins.config.currency,
            now=now,
            day_start=self.ins.governor.policies.day_start(now),  # the policy timezone's day
            equity=self.ins.equity,
            unrealised=self.ins.unrealised,
            counters=counters,
            positions=self.ins.store.positions(),
            open_orders=self.ins.store.orders(live_only=True),
            strategy_of=strategy_of,
            suppression=kpi.Suppression.of(self.ins.store),
            policies=self.policy_states(),
            drawdown_limit=_fraction(drawdown.from_peak_pct),
            day_start_equity=counters.day_start_equity or self.ins.equity,
            daily_loss_limit=_fraction(drawdown.daily_loss_pct),
        )

    async def publish_kpi(self) -> None:
        """Publish `inspector.kpi` now."""
        await self.ins.publish(self.kpi())

    def positions_view(self) -> list[dict[str, Any]]:
        """Return open positions with their protective orders, for `/positions` and status."""
        out = []
        for position in self.ins.store.positions():
            guards: list[dict[str, str | None]] = []
            for order_id in (position.stop_order, position.tp_order):
                order = self.ins.store.order(order_id) if order_id else None
                if order is not None:
                    guards.append(
                        {
                            "id": order.client_order_id,
                            "role": order.role,
                            "price": str(order.stop_price or order.price),
                            "amount": str(order.amount),
                            "status": order.status,
                        }
                    )
            for kind in self.ins.guard.emulated(position):
                price = position.stop if kind == "stop_loss" else position.take_profit
                guards.append(
                    {
                        "id": None,
                        "role": kind,
                        "price": str(price),
                        "amount": str(position.size),
                        "status": "emulated",
                    }
                )
            out.append(
                {
                    "symbol": position.symbol,
                    "side": position.side,
                    "size": str(position.size),
                    "entry": str(position.entry),
                    "strategy": position.strategy,
                    "managed": "runtime" if position.runtime else "legacy",
                    "stop": None if position.stop is None else str(position.stop),
                    "take_profit": None
                    if position.take_profit is None
                    else str(position.take_profit),
                    "protective": guards,
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        """Return what `/health` answers."""
        counters = self.ins.store.counters()
        healthy = self.ins.entries_open and not self.ins.provider_down and not self.ins.bus.degraded
        return {
            "status": "ok" if healthy else "degraded",
            "instance": self.ins.instance,
            "account": self.ins.config.account,
            "clock": self.ins.clock.kind,
            "entries_open": self.ins.entries_open,
            "provider_down": self.ins.provider_down,
            "bus": "waiting for Redis" if self.ins.bus.degraded else "ok",
            "bus_trimmed": trimmed_rows(self.ins.bus.trimmed),  # entries lost to the stream cap
            "pending": len(self.ins.held),
            "verdicts": self.ins.verdicts,
            "in_flight": len(
                [o for o in self.ins.store.orders(live_only=True) if o.status == "in_flight"]
            ),
            "positions": len(self.ins.store.positions()),
            "stand_down_until": None
            if counters.stand_down_until_ms is None
            else from_ms(counters.stand_down_until_ms).isoformat(),
            "venue": None if self.ins.venue is None else self.ins.venue.model_dump(),
            "deferred_closes": {
                symbol: {
                    "reason": d.reason,
                    "since": from_ms(d.since_ms).isoformat(),
                    "wait": d.wait,
                }
                for symbol, d in self.ins.closer.deferred.items()
            },
            "last_reconcile": self.ins.last_reconcile,
            "started": list(self.ins.log),
            "uptime_s": round(time.monotonic() - self.ins.started, 3),
        }


def _fraction(pct: Decimal | None) -> float | None:
    """Return a policy file's percentage as the fraction the KPIs carry (None: not set)."""
    return None if pct is None else float(pct) / 100
