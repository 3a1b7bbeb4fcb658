"""Load held by the multi-process stack: events/s for minutes, RSS per role, bus lag, p99 latency.

`bfx up` (every role its own process) replays the synthetic market on Redis (BFX_REDIS_URL, a
fresh namespace, deleted afterwards) at a speed giving `--rate` candles/s, for `--minutes` of
wall time (`bfx up --for`). Meanwhile this process

- tails the chain (candle -> signal -> decision -> entry order) with the probe of
  `benchmarks/latency.py` and reports the p50/p99 candle -> order latency over the whole run;
- every 10 s reads each role's resident memory (`/proc/<pid>/status`, VmRSS) and the bus lag:
  for every consumer group of a running role, the entries not yet delivered or acknowledged and
  the age of the oldest of them (XINFO / XPENDING);
- at the end divides the events the recorder kept (the audit store) by the run's length: the
  events/s that went through the stack.

The replay runs without lock-step by default: the rate is offered whether the roles keep up or
not, as a live feed would, and the bus lag shows whether they do. `--lockstep` makes each market
moment wait for every role instead (bfx up's default for replays), which measures the rate the
stack sustains.

A candle (1m, or a 5m/15m/1h aggregate) brings about 2.3 events in this stack (its book, the
provider's health, signals, the advisor's stages, verdicts, orders), so the default 230 candles/s
asks for the 500 events/s of issue 13.

`--trace inspector,provider --trace-dir DIR` runs those roles under tracemalloc and writes
snapshots and an RSS/traced-size log to DIR every `--trace-interval` seconds from
`--trace-after` seconds after each traced role starts
(`benchmarks/memtrace.py`, which also compares them). `MALLOC_ARENA_MAX=2` in this process's
environment reaches every role: RSS growth that goes away with it is glibc's arenas.

Usage: python benchmarks/load.py [--rate 230] [--minutes 10] [--lockstep]
                                 [--trace ROLES --trace-dir DIR [--trace-after 60]]
Prints a table and one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from latency import POLICY, STRATEGY, Probe, _days, _free_port, _quantile, _speed
from memtrace import write_sitecustomize

URL = os.environ.get("BFX_REDIS_URL", "redis://127.0.0.1:6379/0")
ROLES = {
    "recorder": "events record", "provider": "provider start", "detector": "detector run",
    "advisor": "advisor run", "inspector": "inspector run",
}  # fmt: skip
SAMPLE_S = 10.0


def role_pids(up_pid: int) -> dict[str, int]:
    """The pid of each role, a child of `bfx up`."""
    out: dict[str, int] = {}
    for role, command in ROLES.items():
        found = subprocess.run(
            ["pgrep", "-P", str(up_pid), "-f", f"barfinex_cli {command}"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        if found:
            out[role] = int(found[0])
    return out


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def bus_lag(url: str, namespace: str, active_s: float = 60.0) -> tuple[int, float]:
    """Entries running groups have not finished, and the age (s) of the oldest of them."""
    prefix = f"bfx:{namespace}:"
    now_ms = time.time() * 1000
    client = redis.Redis.from_url(url, socket_timeout=5)
    behind, oldest = 0, now_ms
    try:
        types: Any = client.smembers(prefix + "_types")
        for raw in types:
            key = prefix + raw.decode()
            try:
                groups: Any = client.xinfo_groups(key)
            except redis.ResponseError:
                continue
            for info in groups:
                consumers: Any = client.xinfo_consumers(key, info["name"])
                if not consumers or min(int(c["idle"]) for c in consumers) > active_s * 1000:
                    continue  # a group no running role reads
                last = info["last-delivered-id"].decode()
                after: Any = client.xrange(key, min=f"({last}", count=10_000)
                behind += len(after) + int(info["pending"])
                if after:
                    oldest = min(oldest, int(after[0][0].decode().split("-")[0]))
                pending: Any = client.xpending(key, info["name"]) if info["pending"] else {}
                if pending.get("min"):  # acknowledged meanwhile: nothing left pending
                    oldest = min(oldest, int(pending["min"].decode().split("-")[0]))
    finally:
        client.close()
    return behind, (now_ms - oldest) / 1000


async def run(
    rate: float,
    minutes: float,
    folder: Path,
    lockstep: bool,
    trace: tuple[list[str], Path, int, float, float] | None = None,
) -> dict[str, Any]:
    from barfinex_cli.bus.redis_streams import RedisStreamsBus
    from barfinex_cli.store.audit import AuditStore

    (folder / "latency_probe.py").write_text(STRATEGY)
    (folder / "policy.toml").write_text(POLICY)
    namespace = f"bench-load-{uuid.uuid4().hex[:8]}"
    bus = RedisStreamsBus(URL, namespace)
    probe = Probe()
    following = asyncio.create_task(probe.follow(bus))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFX_")}
    env.update(BFX_HOME=str(folder / "home"), BFX_NAMESPACE=namespace, BFX_REDIS_URL=URL)
    if trace is not None:
        roles, trace_dir, frames, interval, after = trace
        write_sitecustomize(trace_dir, roles, frames, interval, after)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(trace_dir), env.get("PYTHONPATH")]))
    market_minutes = int(minutes * 60 * _speed(rate) / 60 * 1.3) + 60  # outlasts --for
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "barfinex_cli", "up", "--redis-url", URL,
            "--strategy", str(folder / "latency_probe.py"), "--policy", str(folder / "policy.toml"),
            "--speed", f"{_speed(rate):.0f}", "--days", f"{_days(market_minutes, 300):.4f}",
            "--history", "300", "--port", str(_free_port()), "--for", f"{minutes * 60:.0f}s",
            "--lockstep" if lockstep else "--no-lockstep", "--json",
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        ended = asyncio.create_task(up.communicate())
        while not ended.done():
            await asyncio.wait({ended}, timeout=SAMPLE_S)
            if ended.done():
                break
            pids = role_pids(up.pid)
            behind, age = await asyncio.to_thread(bus_lag, URL, namespace)
            samples.append({
                "t_s": round(time.monotonic() - began, 1), "candles": len(probe.candle_ns),
                "rss_mib": {r: round(rss_mib(p), 1) for r, p in pids.items()},
                "behind": behind, "oldest_s": round(age, 2),
            })  # fmt: skip
            print(json.dumps(samples[-1]), file=sys.stderr)
        out, err = ended.result()
        if up.returncode != 0:
            raise SystemExit(f"bfx up failed ({up.returncode}): {err.decode()[-2000:]}")
        summary = json.loads(out)
    finally:
        following.cancel()
        await bus.delete_namespace()
        await bus.close()
    with AuditStore(folder / "home" / "audit.db", read_only=True) as audit:
        recorded = sum(n for _, n in audit.types())
    return {"summary": summary, "samples": samples, "probe": probe, "recorded": recorded}


def report(rate: float, minutes: float, result: dict[str, Any]) -> dict[str, Any]:
    samples, probe = result["samples"], result["probe"]
    wall = float(result["summary"].get("wall_s") or minutes * 60)
    # the first sample is taken while the roles warm up; the last ones while they stop
    whole = [s for s in samples if len(s["rss_mib"]) == len(ROLES)]
    steady = whole[1:] or whole
    first, last = steady[0]["rss_mib"], steady[-1]["rss_mib"]
    latencies = probe.latencies_ms()
    figures: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "minutes": minutes, "rate_asked": rate,
        "events_per_s": round(result["recorded"] / wall, 1), "events": result["recorded"],
        "candles_per_s": round(probe.rate(), 1), "wall_s": wall,
        "rss_start_mib": first, "rss_end_mib": last,
        "rss_drift_mib": {r: round(last.get(r, 0) - first[r], 1) for r in first},
        "behind_max": max((s["behind"] for s in steady), default=0),
        "behind_end": steady[-1]["behind"] if steady else 0,
        "lag_max_s": max((s["oldest_s"] for s in steady), default=0),
        "orders": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(_quantile(latencies, 0.99), 1) if latencies else None,
        "load_avg": os.getloadavg()[0],
        "restarts": {r["name"]: r["restarts"] for r in result["summary"].get("roles", [])},
    }  # fmt: skip
    table = Table(title=f"bfx up under load for {minutes:g} min", title_justify="left")
    for column in ("role", "RSS start MiB", "RSS end MiB", "drift MiB"):
        table.add_column(column)
    for role in first:
        table.add_row(role, f"{first[role]:.1f}", f"{last.get(role, 0):.1f}",
                      f"{figures['rss_drift_mib'][role]:+.1f}")  # fmt: skip
    console = Console(width=120)
    console.print(table)
    console.print(
        f"{figures['events_per_s']} events/s recorded ({figures['events']} events, "
        f"{figures['candles_per_s']} candles/s); bus behind at most {figures['behind_max']} "
        f"entries, oldest {figures['lag_max_s']} s; {figures['orders']} entry orders, candle -> "
        f"order p50 {figures['p50_ms']} ms p99 {figures['p99_ms']} ms"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=230.0, help="candles/s the replay asks")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall minutes of load")
    parser.add_argument(
        "--lockstep", action="store_true",
        help="replay in lock-step (each moment waits for every role): measures what the stack "
        "keeps up with instead of offering the rate as a live feed would",
    )  # fmt: skip
    parser.add_argument(
        "--trace", default="", help="roles to run under tracemalloc, e.g. inspector,provider"
    )
    parser.add_argument("--trace-dir", type=Path, help="where the traced roles write snapshots")
    parser.add_argument("--trace-frames", type=int, default=8, help="frames kept per allocation")
    parser.add_argument(
        "--trace-interval", type=float, default=30.0, help="seconds between snapshots"
    )
    parser.add_argument(
        "--trace-after",
        type=float,
        default=60.0,
        help="seconds after a role starts to begin tracing",
    )
    args = parser.parse_args()
    trace = None
    if args.trace:
        roles = [r.strip() for r in args.trace.split(",") if r.strip()]
        if unknown := [r for r in roles if r not in ROLES]:
            parser.error(
                f"--trace: unknown role {', '.join(unknown)}; choose from {', '.join(ROLES)}"
            )
        if args.trace_dir is None:
            parser.error("--trace needs --trace-dir DIR (the snapshots outlive the run)")
        trace = (
            roles, args.trace_dir.resolve(), args.trace_frames, args.trace_interval,
            args.trace_after,
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.rate, args.minutes, Path(tmp), args.lockstep, trace))
    print(json.dumps(report(args.rate, args.minutes, result)))


if __name__ == "__main__":
    main()
