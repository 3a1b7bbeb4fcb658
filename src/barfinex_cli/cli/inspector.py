"""`bfx inspector`: run the risk governor, and look at or steer a running one.

`run` starts the inspector as a service through `kernel.launch.serve`. The other commands talk to
a running inspector's API (`--url`, default http://127.0.0.1:8008). With none running, `status`,
`stand-down` and `resume` act on `inspector.db` in the data directory (the next start obeys
the stand-down), `reconcile` compares that store with the provider and prints the differences
without applying them (a dry run), and `close-all` refuses: flattening needs the inspector that
manages the positions, so it says to start one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfinex_cli.cli.options import ClockOpt, NoRegisterOpt, ProviderOpt, role_settings
from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:
    from barfinex_cli.runtime.settings import Settings

app = typer.Typer(
    help=(
        "Inspector role: the risk governor, the only role that places orders.\n\n"
        "Examples:\n\n"
        "  bfx inspector run --policy my_policies.toml\n\n"
        "  bfx inspector status --json\n\n"
        "  bfx inspector stand-down --until 2h\n\n"
        "  bfx inspector reconcile --dry-run\n\n"
        "  bfx inspector close-all --yes"
    ),
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A running inspector's API, or from another host the provider's proxy "
        "http://HOST:8081/proxy/inspector (BFX_TOKEN is sent) [http://127.0.0.1:8008].",
    ),
]


@app.command("run")
def run(
    ctx: typer.Context,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy TOML (default: the packaged default policies)."),
    ] = None,
    provider: ProviderOpt = None,
    account: Annotated[str | None, typer.Option(help="Account it trades [paper].")] = None,
    host: Annotated[str | None, typer.Option(help="Address of the API.")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the API [8008].")] = None,
    no_register: NoRegisterOpt = False,
    clock: ClockOpt = None,
) -> None:
    """Judge every advisor.decision against the policies and place what they allow.

    An invalid policy file stops it before it starts (file, key and reason). Editing the file
    while it runs reloads it (an invalid edit keeps the old policies and raises an alert).
    Telegram alerts: set BFX_TELEGRAM_TOKEN and BFX_TELEGRAM_CHAT. Stop with Ctrl-C.

    The rest of its settings are [inspector] in bfx.toml (BFX_INSPECTOR__KEY): e.g.
    trailing_stop_pct and breakeven_at_r (off unless set), the divergence rules of `reconcile`,
    kpi_interval_s; every key in docs/inspector.md, "Running it".

    Examples: bfx inspector run --policy my_policies.toml --port 8008
    """
    import asyncio

    from barfinex_cli.cli.render import err
    from barfinex_cli.inspector.service import Inspector
    from barfinex_cli.kernel.launch import serve
    from barfinex_cli.kernel.parts import Kernel

    settings = role_settings(ctx)
    if policy is not None and not policy.is_file():
        from barfinex_cli.errors import UsageError

        raise UsageError(f"no policy file at {policy} — pass an existing TOML file to --policy")
    config = settings.inspector.with_overrides(
        policy=policy,
        provider_url=provider,
        account=account,
        host=host,
        port=port,
        join_registry=False if no_register else None,
        clock=clock,
    )

    async def build(kernel: Kernel) -> Inspector:
        return await kernel.inspector(config)

    def announce(inspector: Inspector) -> None:
        digest = inspector.governor.policies.digest
        err().print(
            f"inspector {inspector.instance} up: account {config.account}, policies "
            f"{inspector.policy_path} ({digest}), {len(inspector.store.positions())} open "
            f"positions, {inspector.clock.kind} clock, API {inspector.api_url}"
        )

    last, verdicts = asyncio.run(serve(settings, build, announce))
    err().print(f"inspector {last.instance} stopped after {verdicts} verdicts")


def _url(settings: Settings, url: str | None) -> str:
    """Return the inspector API's base URL: `--url`, else the settings' host and port.

    Raises:
        UsageError: `--url` is not an http(s) address a request can go to (a typo used to fall
            back to the store as if no inspector ran, or to end in a traceback).
    """
    config = settings.inspector
    if not url:
        return f"http://{config.host}:{config.port}"
    import httpx

    from barfinex_cli.errors import UsageError

    try:
        parsed = httpx.URL(url)
        usable = (
            parsed.scheme in ("http", "https")
            and bool(parsed.host)
            and not any(c in parsed.host for c in "% ")
            and (parsed.port is None or 0 < parsed.port <= 65535)
        )
    except httpx.InvalidURL:
        usable = False
    if not usable:
        raise UsageError(
            f"--url {url!r}: give an http(s) URL, e.g. http://127.0.0.1:8008 (the inspector's "
            "API) or http://HOST:8081/proxy/inspector (through the provider)"
        )
    return url.rstrip("/")


def _call(
    settings: Settings, url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """Call a running inspector, directly or through the provider's `/proxy/inspector`.

    The gateway token (BFX_TOKEN, else DATA_DIR/token) goes with every call: the provider's
    proxy checks it (and never forwards it), the inspector's own API ignores it. None when
    nothing answers at `url`.

    Raises:
        TokenRefused: The provider's proxy refused the token, or there is none to send.
        ServiceUnreachable: The inspector could not reach the provider it needed (its 503 and
            reason), or the proxy could not reach the inspector (502/503).
    """
    import httpx

    from barfinex_cli.errors import BfxError, ServiceUnreachable, TokenRefused
    from barfinex_cli.runtime.client import token_from

    token = token_from(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url + path, json=body, headers=headers, timeout=30)
    except httpx.TransportError:
        return None
    if response.is_success:
        return response.json()
    try:
        answer = response.json()
    except ValueError:
        answer = {"detail": response.text}
    if not isinstance(answer, dict):
        answer = {"detail": answer}
    detail = " ".join(str(answer.get("detail", response.text)).split())  # one line, always
    if response.status_code in (401, 403):  # only the provider's gateway checks a token
        raise TokenRefused(url, missing=token is None)
    if answer.get("unreachable") == "provider":  # the inspector answered: its provider did not
        raise ServiceUnreachable(f"the inspector at {url} could not reach its provider: {detail}")
    if response.status_code in (502, 503, 504):  # the provider's proxy: no inspector behind it
        raise ServiceUnreachable(
            f"no inspector answers behind {url} ({response.status_code}: {detail}) — start it "
            "with `bfx inspector run`, or check --url"
        )
    if response.status_code in (404, 405, 501):  # something answers, not an inspector's API
        from barfinex_cli.errors import UsageError

        raise UsageError(
            f"no inspector API at {url} ({method} {path} answered {response.status_code}: "
            f"{detail[:200]}) — check --url: http://127.0.0.1:8008, or "
            "http://HOST:8081/proxy/inspector"
        )
    if response.status_code == 422:  # a value the command was given: the caller's to fix
        from barfinex_cli.errors import UsageError

        raise UsageError(f"the inspector at {url} refused it: {detail}")
    raise BfxError(f"the inspector at {url} answered {response.status_code}: {detail}")


def _store(settings: Settings) -> Any:
    from barfinex_cli.errors import NotFound
    from barfinex_cli.store.inspector import InspectorStore

    path = settings.inspector_path
    if not path.is_file():
        raise NotFound(
            f"no inspector is running and {path} does not exist — start one with "
            "`bfx inspector run` (or pass --data-dir)"
        )
    return InspectorStore(path)


@app.command("status")
def status(
    ctx: typer.Context,
    url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print policy states, positions with their protective orders, KPIs and drawdown.

    Asks the running inspector; with none running, reads inspector.db (positions, counters
    and stand-down as last stored; no live KPIs).

    Examples: bfx inspector status --json
    """
    from barfinex_cli.cli.render import out, print_json

    settings = state_of(ctx).settings()
    answer = _call(settings, _url(settings, url), "GET", "/api/v1/status")
    if answer is None:
        answer = _offline_status(settings)
    if as_json:
        print_json(answer)
        return
    console = out()
    say = partial(console.print, markup=False)  # data: a [bracket] is text, not a style
    health = answer["health"]
    running = "running" if health.get("running", True) else "not running (from the store)"
    say(f"inspector {health.get('instance', '?')}: {running}, {health['status']}")
    if health.get("stand_down_until"):
        say(f"stand-down until {health['stand_down_until']}")
    for name, state in answer.get("policies", {}).items():
        say(f"  policy {name}: {state}")
    kpi = answer.get("kpi")
    if kpi:
        say(
            f"equity {kpi['equity']} {kpi['pnl_currency']}, P&L realised {kpi['realised_pnl']} "
            f"unrealised {kpi['unrealised_pnl']}, win rate {kpi['win_rate']:.0%} over "
            f"{kpi['trades']} trades today"
        )
        say(
            f"drawdown {kpi['drawdown']:.2%} from the peak ({_limit(kpi.get('drawdown_limit'))}), "
            f"{(kpi.get('daily_loss') or 0):.2%} today ({_limit(kpi.get('daily_loss_limit'))})"
        )
    counters = answer.get("counters")
    if counters:  # no inspector running: what the store last held
        from decimal import Decimal

        say(
            f"as last stored (day {counters['day'] or '-'}): {counters['trades_today']} trades "
            f"today ({counters['losing_trades_today']} losing), realised "
            f"{Decimal(counters['realised_today']):.2f}, loss streak {counters['loss_streak']}; "
            f"{counters['wins']} wins and {counters['losses']} losses in all"
        )
    positions = answer.get("positions", [])
    say(f"{len(positions)} open positions")
    for p in positions:
        guards = ", ".join(f"{g['role']} {g['price']} ({g['status']})" for g in p["protective"])
        say(
            f"  {p['symbol']} {p['side']} {p['size']} @ {p['entry']} [{p['managed']}, "
            f"{p['strategy']}] {guards or 'no protective orders'}"
        )


def _limit(fraction: float | None) -> str:
    return "no limit" if fraction is None else f"limit {fraction:.2%}"


def _offline_status(settings: Settings) -> dict[str, Any]:
    from barfinex_cli.cli.render import err
    from barfinex_cli.contracts.times import from_ms

    with _store(settings) as store:
        counters = store.counters()
        for note in store.repairs:  # a value no clock can hold, replaced: say so, once
            err().print(f"warning: {note}")
        positions = []
        for position in store.positions():
            guards = []
            for order_id in (position.stop_order, position.tp_order):
                order = store.order(order_id) if order_id else None
                if order is not None:
                    guards.append({"role": order.role, "status": order.status,
                                   "price": str(order.stop_price or order.price)})  # fmt: skip
            positions.append({
                "symbol": position.symbol, "side": position.side, "size": str(position.size),
                "entry": str(position.entry), "strategy": position.strategy,
                "managed": "runtime" if position.runtime else "legacy", "protective": guards,
            })  # fmt: skip
        until = counters.stand_down_until_ms
        return {
            "health": {
                "instance": settings.inspector.instance,
                "status": "stopped",
                "running": False,
                "stand_down_until": None if until is None else from_ms(until).isoformat(),
            },
            "counters": {
                "day": counters.day,
                "trades_today": counters.trades_today,
                "losing_trades_today": counters.losing_trades_today,
                "wins": counters.wins,
                "losses": counters.losses,
                "loss_streak": counters.loss_streak,
                "realised_today": str(counters.realised_today),
                "peak_equity": str(counters.peak_equity),
            },
            "positions": positions,
        }


def _until(text: str | None) -> dict[str, Any]:
    """Read `--until` into the API's body: a duration (30m, 2h, 1d) as `for` seconds, which
    the inspector counts on its own clock (market time in a replay), or an ISO 8601 time as
    `until`; no `--until`: an empty body (until resumed)."""
    if text is None:
        return {}
    from barfinex_cli.cli.timeparse import parse_duration
    from barfinex_cli.errors import UsageError
    from barfinex_cli.inspector.service import MAX_STAND_DOWN

    limit = f"at most {MAX_STAND_DOWN.days}d; leave --until out to stand down until resumed"
    stripped = text.strip()
    if stripped[-1:] in ("s", "m", "h", "d", "w") and stripped[:-1].isdigit():
        if int(stripped[:-1]) == 0:
            raise UsageError(
                f"--until {text}: give a duration longer than 0 (e.g. 30m, 2h); leave --until "
                "out to stand down until resumed"
            )
        try:
            seconds = parse_duration(stripped)
        except UsageError:
            raise UsageError(f"--until {text}: {limit}") from None
        if seconds > MAX_STAND_DOWN.total_seconds():
            raise UsageError(f"--until {text}: {limit}")
        return {"for": seconds}
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        raise UsageError(
            f"--until: cannot read {text!r}; give a duration (2h, 1d) or an ISO time"
        ) from None
    except OverflowError:
        raise UsageError(f"--until {text}: outside the calendar; {limit}") from None
    return {"until": moment.isoformat()}


@app.command("stand-down")
def stand_down(
    ctx: typer.Context,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Until when: a duration (30m, 2h, 1d; at most 366d) counted on the "
            "inspector's clock, or an ISO time (2024-06-01T12:00Z); default: until `resume`.",
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Stop new entries (open positions stay managed) until a time passes or `resume`.

    A duration counts on the running inspector's clock (market time when it replays); with no
    inspector running it counts from now on the wall clock and is written to the store.

    Examples: bfx inspector stand-down --until 2h
    """
    from barfinex_cli.cli.render import err

    settings = state_of(ctx).settings()
    body: dict[str, Any] = {**_until(until), "reason": "bfx inspector stand-down"}
    answer = _call(settings, _url(settings, url), "POST", "/api/v1/stand-down", body)
    where = "running inspector"
    if answer is not None:
        end = answer.get("stand_down_until") if until is not None else None
    else:
        from barfinex_cli.contracts.times import to_ms
        from barfinex_cli.errors import UsageError
        from barfinex_cli.inspector.api import stand_down_end
        from barfinex_cli.inspector.service import FOREVER

        try:
            moment = stand_down_end(body, datetime.now(UTC))
        except ValueError as exc:  # its reason starts with the body's key: say the option's
            reason = str(exc).removeprefix("until: ").removeprefix("for: ")
            raise UsageError(f"--until {until}: {reason}") from None
        with _store(settings) as store:
            store.update_counters(
                stand_down_until_ms=to_ms(moment or FOREVER),
                stand_down_reason="bfx inspector stand-down",
            )
        end = None if moment is None else moment.isoformat()
        where = "store (no inspector running; the next start obeys it)"
    when = "until `bfx inspector resume`" if end is None else f"until {end}"
    err().print(f"standing down {when} ({where})")


@app.command("resume")
def resume(ctx: typer.Context, url: UrlOption = None) -> None:
    """Clear a stand-down: new entries are judged again.

    Examples: bfx inspector resume
    """
    from barfinex_cli.cli.render import err

    settings = state_of(ctx).settings()
    answer = _call(settings, _url(settings, url), "POST", "/api/v1/resume")
    where = "running inspector"
    if answer is None:
        with _store(settings) as store:
            store.update_counters(stand_down_until_ms=None, stand_down_reason="")
        where = "store"
    err().print(f"stand-down cleared ({where})")


@app.command("close-all")
def close_all(
    ctx: typer.Context,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: flatten every runtime-managed position now.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Flatten every runtime-managed position now (legacy positions are left alone).

    Needs a running inspector. Examples: bfx inspector close-all --yes
    """
    from barfinex_cli.cli.render import err
    from barfinex_cli.errors import ServiceUnreachable, UsageError

    if not yes:
        raise UsageError("close-all flattens every runtime position: confirm with --yes")
    settings = state_of(ctx).settings()
    target = _url(settings, url)
    answer = _call(settings, target, "POST", "/api/v1/close-all")
    if answer is None:
        raise ServiceUnreachable(
            f"no inspector answers at {target} — start it with `bfx inspector run` (it manages "
            "the positions it closes), or pass --url"
        )
    closed = answer.get("closed", [])
    err().print(f"closing {len(closed)} positions: {', '.join(closed) or 'none open'}")


@app.command("reconcile")
def reconcile(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the differences; change nothing.")
    ] = False,
    url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Compare the inspector's orders and positions with the provider's; apply the rules.

    Each difference is handled by the rule of its kind, set in bfx.toml's [inspector] as
    divergence_order, divergence_position and divergence_balance: alert (flag it), adopt (take
    the provider's figure) or stand_down. --dry-run prints each difference and what its rule
    would do, changing nothing. With no inspector running it always runs as a dry run against
    inspector.db.

    Examples: bfx inspector reconcile --dry-run
    """
    from barfinex_cli.cli.render import out, print_json

    settings = state_of(ctx).settings()
    answer = _call(settings, _url(settings, url), "POST", "/api/v1/reconcile", {"dry_run": dry_run})
    if answer is None:
        answer = _offline_reconcile(settings)
    if as_json:
        print_json(answer)
        return
    console = out()
    say = partial(console.print, markup=False)
    lines = answer.get("differences", [])
    mode = "dry run: nothing changed" if answer.get("dry_run") else "applied"
    say(
        f"{answer.get('orders_checked', 0)} orders, {answer.get('positions_checked', 0)} "
        f"positions checked; {len(lines)} differences ({mode})"
    )
    for line in lines:
        say(f"  {line['line']}")


def _offline_reconcile(settings: Settings) -> dict[str, Any]:
    import asyncio

    from barfinex_cli.inspector import reconcile as rec
    from barfinex_cli.inspector.reconciling import compared_orders
    from barfinex_cli.runtime.client import GatewayClient, token_from

    config = settings.inspector
    base = config.provider_url or settings.provider_url

    async def fetch(store: Any) -> tuple[Any, Any, Any]:
        # the live orders of either side, as the running inspector compares, not every order
        async with GatewayClient(base, token_from(settings)) as client:
            local, remote = await compared_orders(store, client, config.account)
            return local, remote, await client.positions(config.account)

    with _store(settings) as store:
        local_orders, remote_orders, remote_positions = asyncio.run(fetch(store))
        rules: dict[rec.Kind, rec.Rule] = {
            "order": config.divergence_order,
            "position": config.divergence_position,
            "balance": config.divergence_balance,
        }
        differences = rec.diff(
            orders=local_orders, positions=store.positions(), remote_orders=remote_orders,
            remote_positions=remote_positions, rules=rules,
        )  # fmt: skip
    return {
        "dry_run": True,
        "orders_checked": len(remote_orders),
        "positions_checked": len(remote_positions),
        "differences": [
            {"kind": d.kind, "key": d.key, "store": d.local, "provider": d.remote,
             "rule": d.rule, "line": rec.describe(d)}
            for d in differences
        ],
    }  # fmt: skip
