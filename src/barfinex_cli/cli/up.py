"""`bfx up`: the whole stack, each role its own supervised process, on Redis.

Thin: it chooses the Redis (`kernel.redis_server`), lists the roles as the `bfx` subcommands a
user would run by hand, hands them to the `kernel.supervisor`, and renders the live status panel
and the summary (`cli.up_view`). With `--roles` it starts only some roles, joining a stack whose
provider runs on another host: they reach its gateway at `--provider`, advisors join the shared
group under this host's name, and the run ends with that provider's replay.

It runs past 400 lines because its three ways to run (supervised processes, a roles-only host,
one process) share the options, the plan and the stop conditions; the panel and the summary
live in `cli.up_view`, the processes in `kernel.supervisor`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfinex_cli.cli.state import state_of
from barfinex_cli.cli.up_view import Counts, panel, print_summary, summary_of

if TYPE_CHECKING:
    from barfinex_cli.kernel.supervisor import RoleProcess
    from barfinex_cli.runtime.settings import Settings

ROLE_COMMANDS = ("advisor", "inspector")
"""Roles `bfx up` starts when their command has landed (the provider and detector always)."""


def _example_strategies() -> list[Path]:
    """Return the example strategies: `./strategies/*.py`, else the ones beside the package."""
    import barfinex_cli

    for folder in (
        Path.cwd() / "strategies",
        Path(barfinex_cli.__file__).parents[2] / "strategies",
    ):
        found = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
        if found:
            return found
    return []


def _available(role: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"barfinex_cli.cli.{role}") is not None


def up(
    ctx: typer.Context,
    strategy: Annotated[
        list[Path] | None,
        typer.Option("--strategy", help="A strategy file (repeat); default: strategies/*.py."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Inspector policy file (default: the bundled one).")
    ] = None,
    replay: Annotated[
        Path | None, typer.Option(help="Replay these candle files (default: the synthetic market).")
    ] = None,
    speed: Annotated[
        str, typer.Option(help="Replay speed: a multiple of real time, or max.")
    ] = "60",
    days: Annotated[
        float | None, typer.Option(help="Synthetic replay: days of market to make [7].")
    ] = None,
    history: Annotated[
        int | None,
        typer.Option(help="Replay: base candles kept as history before the live part [720]."),
    ] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="Stop after this long (30s, 10m, 2h).")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Live market data from --exchange (paper orders).")
    ] = False,
    exchange: Annotated[str | None, typer.Option(help="With --live: a ccxt exchange id.")] = None,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols.")] = None,
    roles: Annotated[
        str | None,
        typer.Option(help="Only these roles (e.g. detector,advisor) to join a stack elsewhere."),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", help="Redis to use (default: local, else embedded)."),
    ] = None,
    embedded_redis: Annotated[
        bool, typer.Option("--embedded-redis", help="Start bfx's own Redis even if one answers.")
    ] = False,
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8081,
    host: Annotated[
        str, typer.Option(help="Gateway address (0.0.0.0 lets other hosts' roles reach it).")
    ] = "127.0.0.1",
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="With --roles and no provider here: the gateway URL of the stack's provider "
            "(default: settings' provider_url).",
        ),
    ] = None,
    host_name: Annotated[
        str | None,
        typer.Option(
            help="This host's name in shared consumer groups and the registry "
            "(default: hostname and data dir).",
        ),
    ] = None,
    remote_apps: Annotated[
        int,
        typer.Option(
            help="The replay also waits for this many roles started on other hosts to register.",
            min=0,
        ),
    ] = 0,
    lockstep: Annotated[
        bool,
        typer.Option(
            "--lockstep/--no-lockstep",
            help="Replay: play each market moment only once every role has handled the last, "
            "so orders match `bfx backtest` (pacing still applies; lock-step only adds waits).",
        ),
    ] = True,
    single_process: Annotated[
        bool,
        typer.Option(
            "--single-process", help="Every role in this process on the in-process bus (no Redis)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Start the whole stack: provider, paper broker, recorder, detectors, advisor, inspector.

    Each role runs as its own process with the same command you would type, supervised: a role
    that crashes is restarted and handles what it had not finished. Redis is the one you name,
    one answering on 127.0.0.1:6379, or an embedded server bfx starts in the data dir. The
    gateway listens on :8081 so `bfx studio` can attach. Ctrl-C, --for, or the end of the replay
    stops every role in order and prints a summary; a role not stopped within 10 s is killed,
    and a second Ctrl-C kills the rest at once. With Redis gone the roles stop without waiting
    for it, and `bfx up` says so and exits 3 after the summary.

    Examples:

      bfx up                                    # synthetic replay at 60x, example strategies

      bfx up --speed max --days 1 --json        # a quick full run, summary for scripts

      bfx up --for 10m --strategy strategies/trend_ema_adx.py

      bfx up --roles detector,advisor --redis-url redis://host:6379 \
             --provider http://host:8081 --strategy strategies/mine.py  # join a stack elsewhere

      bfx up --single-process --speed max --days 1   # one process, in-process bus, no Redis

      bfx up --replay data/ --no-lockstep       # the replay does not wait for the roles
    """
    import asyncio

    from barfinex_cli.cli.timeparse import parse_duration
    from barfinex_cli.errors import UsageError
    from barfinex_cli.runtime.logs import setup_logging

    settings = state_of(ctx).settings()
    setup_logging(settings.log_level, json_lines=settings.log_json or None)
    duration = parse_duration(for_) if for_ else None
    wanted = {r.strip() for r in roles.split(",")} if roles else None
    known = {"recorder", "provider", "detector", *ROLE_COMMANDS}
    if wanted is not None and not wanted <= known:
        raise UsageError(
            f"--roles: unknown {', '.join(sorted(wanted - known))} — choose from "
            f"{', '.join(sorted(known))}"
        )
    if live and not exchange:
        raise UsageError("--live needs --exchange (a ccxt id, e.g. binance)")
    strategies = strategy or _example_strategies()
    for path in strategies:
        if not path.is_file():
            raise UsageError(f"no strategy file at {path} — see `strategies/` for examples")
    if not strategies and (wanted is None or "detector" in wanted):
        raise UsageError("no strategy files found — pass --strategy FILE")
    _check_files(strategies, policy, wanted)
    options = {
        "replay": replay, "speed": speed, "days": days, "live": live, "exchange": exchange,
        "symbols": symbols, "policy": policy, "port": port, "history": history, "host": host,
        "provider": provider, "host_name": host_name, "remote_apps": remote_apps,
        "lockstep": lockstep,
    }  # fmt: skip
    if single_process:
        if wanted is not None or live:
            raise UsageError("--single-process runs every role on a replay: drop --roles/--live")
        summary = asyncio.run(_run_single(settings, strategies, options, duration))
    else:
        summary = asyncio.run(
            _run(
                settings, strategies, wanted, options, duration, redis_url, embedded_redis, as_json
            )
        )
    print_summary(summary, as_json)
    if summary.get("redis_lost"):
        from barfinex_cli.errors import RedisUnreachable

        raise RedisUnreachable(
            summary["redis"],
            "it stopped answering and the roles stopped without it; what they had not "
            "acknowledged is left pending in Redis for the next start",
        )


def _check_files(strategies: list[Path], policy: Path | None, wanted: set[str] | None) -> None:
    """Load the strategy and policy files the roles started here will load, before any starts.

    A broken file otherwise stops its role at start, the supervisor restarts it in a loop, and
    the reason is only in the role's log. Here it is one line naming the file and what is wrong
    (the role's own message) and `bfx up` starts nothing.

    Raises:
        UsageError: No policy file at `policy`.
        StrategyError: A strategy file does not load (its file:line and the reason).
        ConfigError: The policy file does not validate (its file, key and reason).
    """
    from barfinex_cli.errors import UsageError

    if wanted is None or "detector" in wanted:
        from barfinex_cli.detector.loader import load_strategy

        for path in strategies:
            load_strategy(path)
    if policy is not None and (wanted is None or "inspector" in wanted):
        if not policy.is_file():
            raise UsageError(f"no policy file at {policy} — pass an existing TOML file to --policy")
        from barfinex_cli.inspector.policies.loading import load_policies

        load_policies(policy)


def _plan(
    settings: Settings, strategies: list[Path], wanted: set[str] | None, options: dict[str, Any]
) -> list[RoleProcess]:
    """Return the roles in start order: recorder, provider, inspector, advisor, detectors."""
    from barfinex_cli.kernel.supervisor import RoleProcess

    def on(role: str) -> bool:
        return (wanted is None or role in wanted) and (
            role not in ROLE_COMMANDS or _available(role)
        )

    plan: list[RoleProcess] = []
    registering = (
        sum(1 for _ in strategies) * on("detector")
        + sum(on(r) for r in ROLE_COMMANDS)
        + int(options["remote_apps"])
    )  # fmt: skip
    if on("recorder"):
        plan.append(RoleProcess("recorder", ("events", "record")))
    if on("provider"):
        args = ["provider", "start", "--no-record", "--port", str(options["port"])]
        args += ["--host", str(options["host"])]
        if options["live"]:
            args += ["--exchange", str(options["exchange"])]
        else:
            args += ["--speed", str(options["speed"]), "--wait-for-apps", str(registering)]
            if options["replay"] is not None:
                args += ["--replay", str(options["replay"])]
            if options["days"] is not None:
                args += ["--days", str(options["days"])]
            if options["history"] is not None:
                args += ["--history", str(options["history"])]
        if options["symbols"]:
            args += ["--symbols", str(options["symbols"])]
        lockstep = {"BFX_PROVIDER__LOCKSTEP": "true"} if options.get("lockstep") else {}
        plan.append(RoleProcess("provider", tuple(args), env=lockstep))
    if on("inspector"):
        args = ["inspector", "run"]
        if options["policy"] is not None:
            args += ["--policy", str(options["policy"])]
        plan.append(RoleProcess("inspector", tuple(args)))
    if on("advisor"):
        # one consumer per host in the instance's group: advisors on several hosts share signals
        consumer = f"{settings.advisor.instance}.{host_id(settings, options['host_name'])}"
        plan.append(
            RoleProcess("advisor", ("advisor", "run"), env={"BFX_ADVISOR__CONSUMER": consumer})
        )
    if on("detector"):
        for path in strategies:
            run = ("detector", "run", str(path), "--instance", path.stem)
            plan.append(RoleProcess(f"detector:{path.stem}", run))
    return plan


async def _run(
    settings: Settings,
    strategies: list[Path],
    wanted: set[str] | None,
    options: dict[str, Any],
    duration: float | None,
    redis_url: str | None,
    embedded_redis: bool,
    as_json: bool,
) -> dict[str, Any]:
    import asyncio
    import signal
    import time

    from barfinex_cli.kernel.redis_server import EmbeddedRedis, choose_redis
    from barfinex_cli.kernel.supervisor import Supervisor
    from barfinex_cli.provider.gateway.auth import ensure_token
    from barfinex_cli.runtime.datadir import writable

    home = writable(settings.home)
    plan = _plan(settings, strategies, wanted, options)
    names = {role.name for role in plan}
    local_provider = "provider" in names
    gateway = (
        f"http://127.0.0.1:{options['port']}"
        if local_provider
        else (options["provider"] or settings.provider_url).rstrip("/")
    )
    if embedded_redis:
        embedded: EmbeddedRedis | None = EmbeddedRedis(home)
        url = await embedded.start()  # type: ignore[union-attr]
    else:
        url, embedded = await choose_redis(redis_url or settings.redis_url, home)
    token = ensure_token(settings)
    env = {
        **os.environ, "BFX_HOME": str(home), "BFX_REDIS_URL": url, "BFX_TOKEN": token,
        "BFX_NAMESPACE": settings.namespace, "BFX_LOG_JSON": "true",
        "BFX_PROVIDER_URL": gateway,
    }  # fmt: skip
    supervisor = Supervisor(plan, env, home / "logs", root="provider")
    counts = Counts(settings, url, recorded="recorder" in names)
    title = f"bfx up — Redis {url}, provider {gateway}, data {settings.home}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # the first stops the roles in order, a second kills the rest
        if stop.is_set():
            supervisor.hurry()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    started = time.monotonic()
    error: BaseException | None = None
    redis_gone = False
    try:
        if not local_provider and names - {"recorder"}:
            await _remote_gateway(gateway, token)  # the roles here warm up from it
        await supervisor.start(lambda role: _gateway_up(role, gateway))
        watch = asyncio.create_task(supervisor.watch(stop))
        shown = asyncio.create_task(panel(supervisor, counts, title, stop, quiet=as_json))
        timer = asyncio.create_task(_stop_after(duration, stop)) if duration else None
        ended = asyncio.create_task(_replay_end(gateway, counts, options, stop))
        try:
            await watch
        except BaseException as exc:  # a role crashing too often: report it after stopping
            error = exc
        stop.set()
        await supervisor.stop()
        if any(role.stop_code for role in supervisor.roles):  # did they stop for want of Redis?
            redis_gone = not await _redis_answers(url)
        shown.cancel()
        ended.cancel()
        if timer is not None:
            timer.cancel()
    finally:
        await supervisor.stop()
        if embedded is not None:
            await embedded.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if error is not None:
        raise error
    summary = summary_of(settings, supervisor, counts, "embedded" if embedded else url)
    summary["provider"] = gateway
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary["redis_lost"] = redis_gone
    return summary


async def _redis_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Tell whether the stack's Redis answers a PING within `timeout_s`."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def host_id(settings: Settings, given: str | None) -> str:
    """Return this host's name in shared groups: `--host-name`, else hostname and data dir.

    Stable across restarts of one stack (a restarted role gets its own pending entries back),
    distinct for two stacks on one machine (two data dirs).
    """
    import hashlib
    import re
    import socket

    if given:
        name = given
    else:
        digest = hashlib.sha1(str(settings.home.resolve()).encode()).hexdigest()[:6]
        name = f"{socket.gethostname()}-{digest}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:40]


async def _remote_gateway(gateway: str, token: str, timeout_s: float = 30.0) -> None:
    """Wait until the stack's provider answers at `gateway`; a one-line error naming the fix."""
    import asyncio
    import time

    import httpx

    from barfinex_cli.errors import ServiceUnreachable

    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{gateway}/api/v1/health", headers=headers)).is_success:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise ServiceUnreachable(
        f"no provider answers at {gateway} — start the stack's provider host first, or pass "
        "--provider URL (its gateway, e.g. http://host:8081)"
    )


async def _run_single(
    settings: Settings, strategies: list[Path], options: dict[str, Any], duration: float | None
) -> dict[str, Any]:
    """Run every role in this process on one in-process bus and one market clock (the kernel)."""
    import asyncio
    import signal
    import time

    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.kernel.stack import run_in_process

    memory = settings.model_copy(update={"bus": "memory"})
    speed = options["speed"]
    provider = memory.provider.with_overrides(
        speed=None if str(speed).lower() in ("max", "0") else float(str(speed).rstrip("x")),
        days=options["days"], history=options["history"], replay=options["replay"],
        port=options["port"], exit_at_end=True,
    ).model_copy(update={"lockstep": bool(options.get("lockstep"))})  # fmt: skip
    if str(speed).lower() in ("max", "0"):
        provider = provider.model_copy(update={"speed": None})
    detectors = [
        memory.detector.with_overrides(strategy=path, instance=path.stem) for path in strategies
    ]
    inspector = memory.inspector.with_overrides(policy=options["policy"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    timer = asyncio.create_task(_stop_after(duration, stop)) if duration else None
    try:
        async with Kernel(memory) as kernel:
            run = await run_in_process(
                kernel, provider, detectors, stop, advisor_configs=[memory.advisor],
                inspector_configs=[inspector],
            )  # fmt: skip
    finally:
        if timer is not None:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    roles = [("recorder", run.recording), ("provider", run.provider), *(
        (f"detector:{d.instance}", d) for d in run.detectors), *(
        (f"advisor:{a.instance}", a) for a in run.advisors), *(
        ("inspector", i) for i in run.inspectors)]  # fmt: skip
    summary = summary_of(
        settings, None, Counts(settings, None, recorded=True), "none (in-process bus)"
    )
    summary["roles"] = [{"name": n, "state": "stopped", "restarts": 0, "exit_codes": []}
                        for n, _ in roles]  # fmt: skip
    summary["wall_s"] = round(time.monotonic() - started, 1)
    return summary


async def _gateway_up(role: RoleProcess, gateway: str, timeout_s: float = 120.0) -> None:
    """After the provider starts, wait until its gateway answers (the others warm up from it)."""
    import asyncio
    import time

    import httpx

    if role.name != "provider":
        return
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            if role.process is None or role.process.returncode is not None:
                return  # it exited: the supervisor reports or restarts it
            try:
                if (await client.get(f"{gateway}/api/v1/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def _replay_end(gateway: str, counts: Counts, options: dict[str, Any], stop: Any) -> None:
    """Stop the stack once the replay has ended and the roles have handled its last events.

    The provider keeps serving after its replay (the advisor and inspector still ask it for
    context and place orders), so the end is read from its health — this host's provider, or
    the remote one a `--roles` host joined — then the flow is watched until it stops growing.
    A live provider never ends: Ctrl-C or `--for` stops the stack.
    """
    import asyncio

    import httpx

    if options["live"]:
        return
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            try:
                if (await client.get(f"{gateway}/api/v1/health")).json().get("replay_done"):
                    break
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            await asyncio.sleep(0.5)
    if not stop.is_set():
        await _settle(counts)
        stop.set()


async def _settle(counts: Counts, quiet_s: float = 2.0, limit_s: float = 60.0) -> None:
    """Wait until the flow stops growing (the roles finished the replay's last events)."""
    import asyncio
    import time

    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        total = sum((await asyncio.to_thread(counts)).values())
        if not total and last > 0:
            pass  # a read that failed (the store busy) says nothing about the flow
        elif total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        await asyncio.sleep(0.25)


async def _stop_after(seconds: float, stop: Any) -> None:
    import asyncio
    import contextlib

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    stop.set()
