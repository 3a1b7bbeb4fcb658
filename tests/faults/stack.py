"""A whole `bfx up` stack on a test-owned `redis-server`, to hurt and then to audit.

`Stack` starts `bfx up` as a real process (its own session, so a leftover is killed with its
roles) on the Redis of a `RedisServer` (never the shared one on 6379), finds each role's pid
among its children, reads the bus's stream lengths straight from that Redis to watch progress,
and `Flow` reads what the recorder kept in audit.db once the run has ended: the chain candle →
signal → outcome → verdict → orders that the fault tests check link by link.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

import polling
from barfinex_cli.store.audit import AuditStore
from bus.redis_faults import RedisServer, free_port

STRATEGY = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="momentum_faults", symbols=["BTC/USDT", "ETH/USDT"], timeframe="1m", threshold=2.0,
    cooldown=1,
    rules=[
        Rule("above_ema", ta.close > ta.ema("close", 10), weight=1.0, direction="long"),
        Rule("below_ema", ta.close < ta.ema("close", 10), weight=1.0, direction="short"),
        Rule("rsi_up", ta.rsi(7) > 55, weight=1.0, direction="long"),
        Rule("rsi_down", ta.rsi(7) < 45, weight=1.0, direction="short"),
    ],
)
"""

POLICY = """
timezone = "UTC"
[size]
max_notional = 1000000
max_equity_pct = 100
min_notional = 1
[risk]
per_trade_pct = 0.5
[execution]
protective = "auto"
"""
"""Sizing and protective orders only: no cooldown, so no THROTTLE reaches the detector and its
signals are a function of the candles alone, comparable across runs and with a scan."""

NAMESPACE = "faults"
OUTCOMES = ("advisor.decision", "advisor.decision.rejected", "advisor.signal.dropped")
ROLE_COMMANDS = {
    "recorder": "barfinex_cli events record",
    "provider": "barfinex_cli provider start",
    "detector": "barfinex_cli detector run",
    "advisor": "barfinex_cli advisor run",
    "inspector": "barfinex_cli inspector run",
}


def wait_for(what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
    """Poll `predicate` until it holds; fail naming `what` (`polling.wait_until`)."""
    polling.wait_until(predicate, timeout_s, what=what)


class Stack:
    """`bfx up` on `server`, with its data dir at `home`."""

    def __init__(self, tmp: Path, name: str, server: RedisServer, *up_args: str) -> None:
        self.home = tmp / name
        self.server = server
        strategy = tmp / "momentum_faults.py"
        strategy.write_text(STRATEGY)
        policy = tmp / "policy.toml"
        policy.write_text(POLICY)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
        env.update(BFX_HOME=str(self.home), BFX_NAMESPACE=NAMESPACE, BFX_REDIS_URL=server.url,
                   BFX_TOKEN="faults-token")  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "barfinex_cli", "up", "--strategy", str(strategy),
             "--policy", str(policy),
             "--symbols", "BTC/USDT,ETH/USDT", "--redis-url", server.url,
             "--port", str(free_port()), "--json", *up_args],
            env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.redis = redis.Redis(port=server.port, socket_timeout=2)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            _, err = self.proc.communicate()
            raise AssertionError(f"bfx up ended early ({self.proc.returncode}): {err[-3000:]}")

    def length(self, event_type: str) -> int:
        """Entries on one stream now (0 while Redis is away)."""
        try:
            return int(self.redis.xlen(f"bfx:{NAMESPACE}:{event_type}"))
        except redis.RedisError:
            return 0

    def pid(self, role: str) -> int | None:
        """The pid of `role`'s running process, a child of `bfx up`."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", ROLE_COMMANDS[role]],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        return int(found[0]) if found else None

    def rss_kib(self, pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def kill(self, role: str, timeout_s: float = 60) -> None:
        """SIGKILL `role` and wait until the supervisor has it running again (a new pid)."""
        old = self.pid(role)
        assert old is not None, f"no {role} process to kill"
        os.kill(old, signal.SIGKILL)

        def restarted() -> bool:
            self.alive()
            new = self.pid(role)
            return new is not None and new != old

        wait_for(f"the supervisor to restart the {role}", restarted, timeout_s)

    def finish(self, timeout_s: float = 300) -> dict[str, Any]:
        """Wait for the run to end on its own (the replay's end); return its JSON summary."""
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        finally:
            self.close()
        assert self.proc.returncode == 0, err[-3000:]
        return dict(json.loads(out))

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
        self.redis.close()


class Flow:
    """What the recorder kept of a run, as the links of candle → signal → outcome → orders."""

    def __init__(self, home: Path) -> None:
        with AuditStore(home / "audit.db", read_only=True) as audit:
            self.candles = audit.query(["market.candle"], limit=None)
            self.signals = audit.query(["detector.signal"], limit=None)
            self.outcomes = audit.query(list(OUTCOMES), limit=None)
            self.verdicts = audit.query(["inspector.verdict"], limit=None)
            self.orders = audit.query(["order.submitted"], limit=None)
            self.protective = audit.query(["inspector.protective.placed"], limit=None)
            self.filled = audit.query(["order.filled"], limit=None)
        self.decisions = [o for o in self.outcomes if o.type == "advisor.decision"]
        from barfinex_cli.store.inspector import InspectorStore

        with InspectorStore(home / "inspector.db") as store:
            self.sent = store.orders()  # every order the inspector sent, saved before sending

    def signal_keys(self) -> list[tuple[str, str, str, float]]:
        return sorted(
            (s.payload.symbol, str(s.payload.candle_time), s.payload.direction, s.payload.score)
            for s in self.signals
        )

    def missed_signals(self, home: Path, strategy: Path) -> dict[str, int]:
        """Per symbol, how far the live signals differ from the strategy scanned over the candles.

        The scan runs over what market.db holds; it is compared from the first live signal (the
        detector warmed up on history before it) to the last candle: a candle the detector never
        handled, or handled twice, shows as a difference.
        """
        from barfinex_cli.detector.engine import VectorEngine
        from barfinex_cli.detector.loader import load_strategy
        from barfinex_cli.store.market import MarketStore, SeriesKey

        engine = VectorEngine(load_strategy(strategy))
        out: dict[str, int] = {}
        for symbol in sorted({s.payload.symbol for s in self.signals}):
            live = sorted(
                (int(s.payload.candle_time.timestamp() * 1000), s.payload.direction)
                for s in self.signals if s.payload.symbol == symbol
            )  # fmt: skip
            with MarketStore(home / "market.db") as market:
                frame = market.candles_frame(SeriesKey("synthetic", symbol, "1m"))
            scanned = engine.evaluate(frame, symbol)
            expected = [(r.open_ms, r.direction) for r in scanned if r.open_ms >= live[0][0]]
            out[symbol] = len(set(expected) ^ set(live))
        return out

    def candle_keys(self) -> list[tuple[str, str, str]]:
        return sorted(
            (c.payload.symbol, c.payload.timeframe, str(c.payload.open_time)) for c in self.candles
        )

    def entry_orders(self) -> list[tuple[str, str, str]]:
        """(symbol, side, signal candle) of each entry order the inspector sent."""
        signal_of = {o.id: o.parent_id for o in self.decisions}
        candle_of = {s.id: str(s.payload.candle_time) for s in self.signals}
        return sorted(
            (o.symbol, o.side, candle_of.get(signal_of.get(o.decision_id or "") or "", "?"))
            for o in self.sent if o.role == "entry"
        )  # fmt: skip

    def check_links(self) -> None:
        """Assert every link of the chain holds: nothing lost, nothing doubled."""
        ids = [c.id for c in self.candles]
        assert len(ids) == len(set(ids)), "a candle event recorded twice"
        keys = self.candle_keys()
        assert len(keys) == len(set(keys)), "a candle published twice"
        signal_keys = [(s.payload.symbol, str(s.payload.candle_time)) for s in self.signals]
        assert len(signal_keys) == len(set(signal_keys)), "a candle fired two signals"
        candle_ids = set(ids)
        assert all(s.parent_id in candle_ids for s in self.signals), "a signal without its candle"
        parents = Counter(o.parent_id for o in self.outcomes)
        decided = sorted(p or "" for p in parents)
        assert decided == sorted(s.id for s in self.signals), "a signal without outcome"
        # a decision held while the provider was away is announced as inspector.verdict.pending
        # (its own type, not a verdict), then judged: every verdict counts, one per decision
        final = list(self.verdicts)
        ruled = Counter(v.payload.decision_id for v in final)
        assert sorted(ruled) == sorted(d.id for d in self.decisions), "a decision without verdict"
        self.doubled = {
            "signals decided twice": sum(1 for n in parents.values() if n > 1),
            "decisions ruled twice": sum(1 for n in ruled.values() if n > 1),
        }
        client_ids = [o.payload.order.client_order_id for o in self.orders]
        assert len(client_ids) == len(set(client_ids)), "an order submitted twice"
        allowed = {v.payload.decision_id for v in final if v.payload.verdict == "ALLOW"}
        entries = {o.payload.order.decision_id for o in self.orders
                   if o.payload.order.client_order_id.endswith("-e")}  # fmt: skip
        assert entries <= allowed, "an entry order without an ALLOW"
        sent = {o.decision_id for o in self.sent}
        assert allowed <= sent, f"{len(allowed - sent)} ALLOW verdicts without their order"
        # an ALLOW with no order.* event on the bus: either the paper broker (in the provider)
        # took the order and its events were lost (its outbox in paper.db publishes them after
        # a provider kill), or the order never reached the provider (sent while it restarted:
        # the inspector settles it once the provider answers again) — 0 either way
        ordered = {o.payload.order.decision_id for o in self.orders}
        self.unpublished = len(allowed - ordered)
        signal_of = {d.id: d.parent_id for d in self.decisions}
        entered = Counter(signal_of.get(o.payload.order.decision_id or "") for o in self.orders
                          if o.payload.order.client_order_id.endswith("-e"))  # fmt: skip
        assert max(entered.values(), default=1) == 1, "one signal, two entry orders"

    def check_protected(self) -> None:
        """Every filled entry got its protective orders placed, and announced on the bus.

        An entry's guards are announced under its decision (`inspector.protective.placed`),
        also when the inspector died between placing and announcing them: it announces them
        when it starts again, under the id the first announcement would have had. An entry
        added to a position already open has no guards of its own: the position's guards move
        to the next generation for the whole size, announced under the position's decision
        after the fill.
        """
        fill_ts = {f.payload.order.client_order_id: f.ts for f in self.filled}
        entries = [
            (o.payload.order.decision_id, o.payload.order.symbol,
             fill_ts[o.payload.order.client_order_id])
            for o in self.orders
            if o.payload.order.client_order_id.endswith("-e")
            and o.payload.order.client_order_id in fill_ts
        ]  # fmt: skip
        own_guards = {
            o.payload.order.decision_id for o in self.orders
            if o.payload.order.client_order_id.rsplit("-", 1)[-1].startswith(("sl", "tp"))
        }  # fmt: skip
        announced = {p.payload.decision_id for p in self.protective}

        def guarded(decision: str | None, symbol: str, at: Any) -> bool:
            if decision in announced:
                return True
            moved = (p.payload.symbol == symbol and p.ts >= at for p in self.protective)
            return decision not in own_guards and any(moved)

        self.unannounced = sum(1 for e in entries if not guarded(*e))
        assert self.unannounced == 0, (
            f"{self.unannounced} filled entries without inspector.protective.placed"
        )
        told = Counter(p.payload.order_id for p in self.protective)
        assert max(told.values(), default=1) == 1, "a protective order announced twice"
