"""Start-up and reconciliation of the store against the provider; account-level breaches.

`start_up` runs before any decision is judged: it reads what the venue holds (`GET /broker`),
settles orders left in flight, reconciles, re-arms missing guards, announces the live ones
(under derived ids: one a killed run placed and did not announce is announced once) and takes
emulated ones back. An order sent later that got no answer (the provider restarting) is settled
by `settle` as soon as the provider answers again: at the next heartbeat or decision.

Every `reconcile_interval_s` and at start the store's orders, positions and balance are compared
with the provider's (`reconcile.diff`, pure); each difference is applied by the rule of its kind
(`alert`, `adopt`, `stand_down`), positions found at start are recorded as legacy, and
`inspector.reconciled` reports the pass. A pass the provider did not answer compares nothing: it
raises `ServiceUnreachable` (the API answers 503 with the reason) and publishes nothing, so no
`inspector.reconciled` ever says "0 divergences" about a comparison that was not made.
`check_account` acts on a drawdown or daily-loss breach with no decision in hand.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from barfinex_cli.contracts.inspector import (
    AccountReconciled,
    DivergenceFound,
)
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderState,
    PositionChanged,
)
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import BfxError, NotFound, ServiceUnreachable
from barfinex_cli.inspector import emulation
from barfinex_cli.inspector import reconcile as diffs
from barfinex_cli.inspector.execution import merged
from barfinex_cli.inspector.model import Verdict
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector
    from barfinex_cli.runtime.client import GatewayClient
    from barfinex_cli.store.inspector import InspectorStore

log = logging.getLogger("bfx.inspector")


class Reconciler:
    """Compare the store with the provider and apply each difference's rule."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    async def start_up(self) -> bool:
        """Settle in-flight orders, reconcile, re-arm; then open entries. False: provider down."""
        if self.ins.entries_open:
            return True
        try:
            async with self.ins.lock:
                if self.ins.clock.kind == "market":  # start where the replay has reached
                    reached = (await self.ins.client.health()).market_time
                    if reached is not None:
                        self.ins.clock.advance_to(to_ms(reached))
                await self.read_venue()
                now = self.ins.now_ms()
                settled = await self.ins.executor.resolve(now)
                self.ins.log.append(f"resolved {len(settled)} in-flight orders")
                for order in settled:
                    await self.ins.events.order_changed(order, None)
                await self.reconcile(dry_run=False, initial=True)
                self.ins.log.append("reconciled")
                for position in self.ins.store.positions():
                    if position.runtime and self.ins.protector.missing(position):
                        armed, sent = await self.ins.protector.rearm(position, self.ins.now_ms())
                        await self.ins.guard.announce_placed(armed, sent)
                        self.ins.log.append(f"re-armed {position.symbol}")
                    elif position.runtime and await self.ins.guard.announce_live(position):
                        # a guard placed by a run killed before announcing it is announced now;
                        # one announced before keeps its id (nothing doubles)
                        self.ins.log.append(f"announced the guards of {position.symbol}")
                    if position.runtime and self.ins.guard.emulated(position):
                        await self.ins.guard.announce_emulated(position)  # watched again
        except ServiceUnreachable as exc:
            if not self.ins.provider_down:
                log.warning("start-up waits for the provider", extra={"error": str(exc)})
            self.ins.provider_down = True
            return False
        self.ins.provider_down = False
        self.ins.entries_open = True
        self.ins.log.append("entries open")
        return True

    async def settle(self) -> None:
        """Settle orders left in flight since start-up, if any; the caller holds the lock.

        An order whose send got no answer (the provider down or restarting) is taken from the
        provider's list, or sent again under its id if the provider never got it, and its
        change handled as an event's would be (position, guards, audit). Cheap when nothing is
        in flight: no call at all.

        Raises:
            ServiceUnreachable: The provider did not answer; nothing changed.
        """
        executor = self.ins.executor
        if not self.ins.entries_open or not executor.unsettled:
            return
        for order in await executor.resolve(self.ins.now_ms()):
            log.info(
                "in-flight order settled", extra={"client_order_id": order.client_order_id,
                                                   "status": order.status},
            )  # fmt: skip
            await self.ins.events.order_changed(order, None)

    async def read_venue(self) -> None:
        """Ask the provider what its broker's venue holds (`GET /broker`), once per start."""
        try:
            self.ins.venue = await self.ins.client.broker()
        except NotFound:  # a gateway without the route: guards go to the venue, as before
            self.ins.venue = None
        where = emulation.describe(self.ins.venue, "auto")
        said = "unknown" if self.ins.venue is None else self.ins.venue.source
        stop, take = where["stop_loss"], where["take_profit"]
        self.ins.log.append(f"venue: stop_loss {stop}, take_profit {take} ({said})")

    async def reconcile_tick(self) -> None:
        """Reconcile on the periodic cadence; a provider that does not answer is recorded as
        a pass that could not compare (`last_reconcile`, in `/health`), never as one in sync.

        Raises:
            ServiceUnreachable: The provider did not answer (the loop logs it and goes on).
        """
        if self.ins.entries_open:
            async with self.ins.lock:
                try:
                    await self.reconcile(dry_run=False)
                except ServiceUnreachable as exc:
                    self.ins.provider_down = True
                    self.ins.last_reconcile = {
                        "at": self.ins.clock.now().isoformat(),
                        "compared": False,
                        "error": str(exc),
                    }
                    raise
            await self.check_account()

    async def check_account(self) -> Verdict | None:
        """Act on an account-level breach (drawdown, daily loss) with no decision in hand."""
        breach = self.ins.governor.check(self.ins.portfolio(), self.ins.clock.now())
        if breach is None:
            return None
        reason = f"{breach.policy}: {breach.reason}"
        runtime = [p for p in self.ins.store.positions() if p.runtime]
        if breach.action == "CLOSE_ALL" and all(self.ins.closer.closing(p) for p in runtime):
            # every close is on its way or waits for the book (retried on its own cadence):
            # acting again would only repeat the alerts until the provider reports them flat
            await self.ins.stand_down(breach.until, reason, extend=True)
        elif breach.action == "CLOSE_ALL":
            await self.ins.close_all(reason)
            await self.ins.stand_down(breach.until, reason)
        elif breach.action == "STAND_DOWN":
            await self.ins.stand_down(breach.until, reason)
        return breach

    async def reconcile_now(self, dry_run: bool) -> dict[str, Any]:
        """Reconcile now (for the API and the CLI); return the report."""
        async with self.ins.lock:
            return await self.reconcile(dry_run=dry_run)

    async def reconcile(self, *, dry_run: bool, initial: bool = False) -> dict[str, Any]:
        """Compare the store with the provider and apply each difference's rule."""
        start = time.perf_counter()
        local_orders, remote_orders = await self.compared_orders()
        remote_positions = await self.ins.client.positions(self.ins.config.account)
        balances = await self.ins.client.accounts(self.ins.config.account)
        total = None
        for balance in balances:
            held = balance.balances.get(self.ins.config.currency)
            if held is not None:
                total = held.total
        balance_pair = None
        if total is not None and self.ins.seen_balance is not None and not initial:
            # fills move the balance and its event may still be on its way: a mismatch counts
            # only when the next reconciliation finds the very same one
            pair = (self.ins.seen_balance, total)
            if pair[0] != pair[1] and pair == self.ins.balance_suspect:
                balance_pair = pair
            elif not dry_run:
                self.ins.balance_suspect = pair if pair[0] != pair[1] else None
        rules: dict[diffs.Kind, diffs.Rule] = {
            "order": self.ins.config.divergence_order,
            "position": self.ins.config.divergence_position,
            "balance": self.ins.config.divergence_balance,
        }
        differences = diffs.diff(
            orders=local_orders,
            positions=self.ins.store.positions(),
            remote_orders=remote_orders,
            remote_positions=remote_positions,
            rules=rules,
            balance=balance_pair,
        )
        report: dict[str, Any] = {
            "dry_run": dry_run,
            "orders_checked": len(remote_orders),
            "positions_checked": len(remote_positions),
            "differences": [
                {
                    "kind": d.kind,
                    "key": d.key,
                    "store": d.local,
                    "provider": d.remote,
                    "rule": d.rule,
                    "action": d.action,
                    "line": diffs.describe(d),
                }
                for d in differences
            ],
        }
        if dry_run:
            return report
        if total is not None:
            self.ins.cash = total
        for position in remote_positions:
            self.ins.remote_positions[position.symbol] = position
        divergences = 0
        for difference in differences:
            if initial and difference.kind == "position" and difference.local is None:
                await self.legacy(difference)
                continue
            if difference.rule != "sync":
                divergences += 1
            await self.apply(difference)
        elapsed = (time.perf_counter() - start) * 1000
        await self.ins.publish(
            AccountReconciled(
                account=self.ins.config.account,
                exchange=self.exchange(remote_positions, balances),
                orders_checked=len(remote_orders),
                positions_checked=len(remote_positions),
                balances_checked=len(balances),
                divergences=divergences,
                duration_ms=round(elapsed, 3),
            )
        )
        report["divergences"] = divergences
        self.ins.last_reconcile = {
            "at": self.ins.clock.now().isoformat(),
            "compared": True,
            "divergences": divergences,
        }
        return report

    async def compared_orders(self) -> tuple[list[OrderRecord], list[OrderState]]:
        """Return the orders a reconciliation compares: the store's and the provider's."""
        return await compared_orders(self.ins.store, self.ins.client, self.ins.config.account)

    @staticmethod
    def exchange(positions: list[PositionChanged], balances: list[BalanceUpdated]) -> str:
        for balance in balances:
            return balance.exchange
        for position in positions:
            return position.exchange
        return "unknown"

    async def legacy(self, difference: diffs.Difference) -> None:
        """A position found at start that the inspector did not open: legacy, alert only."""
        remote = difference.remote_position
        assert remote is not None
        now_held = self.ins.store.position(remote.symbol)
        if now_held is not None and now_held.status == "open" and now_held.runtime:
            # an order of ours settled earlier in this pass (an entry that filled while the
            # inspector was down) opened it: it is the inspector's, never legacy
            return
        record = PositionRecord(
            symbol=remote.symbol,
            side="long" if remote.side == "long" else "short",
            size=remote.size,
            entry=remote.entry_price or Decimal(0),
            opened_ms=self.ins.now_ms(),
            runtime=False,
            strategy="legacy",
            realised_at_open=remote.realised_pnl,
        )
        self.ins.store.save_position(record)
        self.ins.log.append(f"legacy {remote.symbol}")
        await self.ins.alerts.raise_(
            "warning",
            f"legacy position {remote.side} {remote.size} {remote.symbol} found at "
            "start: not opened by the inspector, alert only (not managed)",
            subject=remote.symbol,
        )

    async def apply(self, difference: diffs.Difference) -> None:
        now = self.ins.now_ms()
        if difference.rule == "sync":
            assert difference.remote_order is not None
            record = self.ins.store.order(difference.key)
            if record is not None:
                updated = merged(record, difference.remote_order, now)
                self.ins.store.save_order(updated)
                await self.ins.events.order_changed(updated, record)
            return
        self.ins.m_divergences.labels(difference.kind).inc()
        action = difference.action
        if difference.rule == "adopt":
            await self.adopt(difference, now)
        await self.ins.publish(
            DivergenceFound(
                account=self.ins.config.account,
                exchange="provider",
                kind=difference.kind,
                key=difference.key,
                local=difference.local,
                remote=difference.remote,
                action=action,
            )
        )
        await self.ins.alerts.raise_(
            "warning", f"divergence: {diffs.describe(difference)}", subject=difference.key
        )
        if difference.rule == "stand_down":
            await self.ins.stand_down(None, f"divergence on {difference.kind} {difference.key}")

    async def adopt(self, difference: diffs.Difference, now: int) -> None:
        if difference.kind == "order":
            state = difference.remote_order
            record = self.ins.store.order(difference.key)
            if state is not None and record is None:
                self.ins.store.save_order(
                    OrderRecord(
                        client_order_id=state.client_order_id,
                        decision_id=state.decision_id,
                        role="entry",
                        symbol=state.symbol,
                        side=state.side,
                        type=state.type,
                        amount=state.amount,
                        price=state.price,
                        stop_price=state.stop_price,
                        reduce_only=state.reduce_only,
                        status="open",
                        filled=state.filled,
                        placed_ms=now,
                        updated_ms=now,
                        adopted=True,
                    )
                )
            elif record is not None and state is None:
                self.ins.store.save_order(replace(record, status="cancelled", updated_ms=now))
        elif difference.kind == "position":
            remote = difference.remote_position
            held = self.ins.store.position(difference.key)
            if remote is None and held is not None:
                self.ins.store.save_position(
                    replace(held, status="closed", size=Decimal(0), closed_ms=now)
                )
                if held.runtime:  # nothing left to guard
                    await self.ins.protector.cancel_all(held, now)
            elif remote is not None:
                await self.adopt_position(held, remote, now)
        elif difference.kind == "balance" and difference.remote is not None:
            self.ins.seen_balance = Decimal(difference.remote)

    async def adopt_position(
        self, held: PositionRecord | None, remote: PositionChanged, now: int
    ) -> None:
        """Take the provider's position of a symbol into the store (rule `adopt`).

        A runtime position keeps being managed: its guards are re-armed for the adopted size
        (a remainder of one the store had closed opens again, its trade counted afresh). One
        the store never held, or one now on the other side, is recorded, not managed.
        """
        side = _side_of(remote)
        base = held or PositionRecord(
            symbol=remote.symbol,
            side=side,
            size=remote.size,
            entry=remote.entry_price or Decimal(0),
            opened_ms=now,
            runtime=False,
            strategy="adopted",
        )
        if base.runtime and base.side != side:
            base = replace(base, runtime=False, strategy="adopted", stop=None, take_profit=None)
        if base.status != "open":
            base = replace(base, opened_ms=now, closed_ms=None, realised=Decimal(0),
                           realised_at_open=remote.realised_pnl, best_price=None)  # fmt: skip
        adopted = replace(
            base,
            size=remote.size,
            side=side,
            entry=remote.entry_price or base.entry,
            status="open",
        )
        self.ins.store.save_position(adopted)
        if adopted.runtime and adopted.decision_id is not None:
            if self.ins.protector.missing(adopted):
                armed, sent = await self.ins.protector.rearm(adopted, now)
                await self.ins.guard.announce_placed(armed, sent)
            now_held = self.ins.store.position(remote.symbol) or adopted
            await self.ins.guard.announce_emulated(now_held)

    async def catch_up(self, symbol: str) -> None:
        """Take the fills of live orders of ours on `symbol` that the bus has not delivered yet.

        Called as a decision is judged, after the account was read: when the provider's
        position differs from the store's, an order of ours filled and its event is still on
        its way (a resting limit entry filled on the last candle), so the intent would be
        judged against a position that is no longer there. The provider's state of those
        orders is taken now; the events, when they come, change nothing (a fill counts once).
        """
        remote = self.ins.remote_positions.get(symbol)
        have = Decimal(0)
        if remote is not None and remote.side != "flat":
            have = remote.size if remote.side == "long" else -remote.size
        held = self.ins.store.position(symbol)
        want = Decimal(0)
        if held is not None and held.status == "open":
            want = held.size if held.side == "long" else -held.size
        live = [o for o in self.ins.store.orders(live_only=True) if o.symbol == symbol]
        if have == want or not live:
            return
        account = self.ins.config.account
        asked = [o.client_order_id for o in live]
        states = {o.client_order_id: o for o in await self.ins.client.orders(account, ids=asked)}
        now = self.ins.now_ms()
        for order in live:
            state = states.get(order.client_order_id)
            if state is None or state.filled <= order.filled:
                continue
            updated = merged(order, state, now)
            if updated is not order:
                self.ins.store.save_order(updated)
                await self.ins.events.order_changed(updated, order)

    async def verify_flat(self, symbol: str) -> None:
        """Ask the provider whether it holds nothing of `symbol`, which the store just closed,
        and reconcile at once if it does: a remainder the store believes closed is a divergence
        (handled by its rule), not something the next reconciliation — on a market clock, a
        market day away — may find.

        Skipped while an entry of ours on the symbol is live: its fill may explain a holding.
        """
        live = self.ins.store.orders(live_only=True, role="entry")
        if any(order.symbol == symbol for order in live):
            return
        try:
            held = await self.ins.client.positions(self.ins.config.account)
        except BfxError as exc:
            log.warning("cannot check the provider is flat", extra={"error": str(exc)})
            return
        if any(p.symbol == symbol and p.size > 0 and p.side != "flat" for p in held):
            await self.reconcile(dry_run=False)


def _side_of(position: PositionChanged) -> Literal["long", "short"]:
    return "long" if position.side == "long" else "short"


async def compared_orders(
    store: InspectorStore, client: GatewayClient, account: str
) -> tuple[list[OrderRecord], list[OrderState]]:
    """Return the orders a reconciliation compares: the store's and the provider's.

    Those are the orders either side holds open (or, for the store, in flight), and the
    provider's state of each live one of the store, whatever its status there. Orders closed
    on both sides cannot diverge, and reading them all on every pass made each pass's memory
    and time grow with every order the run ever placed: this reads what is live. The running
    inspector and `bfx inspector reconcile` with no inspector running both ask this.
    """
    live = store.orders(live_only=True)
    remote = await client.orders(account, open_only=True)
    mine = {o.client_order_id for o in live}
    theirs = {o.client_order_id for o in remote}
    asked = [o.client_order_id for o in live if o.client_order_id not in theirs]
    remote += await client.orders(account, ids=asked)
    # an order open at the provider that the store holds closed is the store's, not foreign
    known = (store.order(c) for c in theirs if c not in mine)
    return live + [o for o in known if o is not None], remote
