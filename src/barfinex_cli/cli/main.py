"""The `bfx` Typer app: global options, the command tree and the one exit point for errors.

Only Typer is imported here; every command imports what it needs when it runs, so `bfx --help`
answers fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ParseError  # Typer vendors Click since 0.27
from typer.core import TyperGroup

from barfinex_cli import __version__
from barfinex_cli.cli import (
    advisor,
    backtest,
    config,
    data,
    data_download,
    data_integrity,
    detector,
    detector_run,
    doctor,
    events,
    inspector,
    optimize,
    paper,
    provider,
    studio,
    trace,
    up,
)
from barfinex_cli.cli.state import State
from barfinex_cli.errors import BfxError


class BfxGroup(TyperGroup):
    """The root group and the one exit point: every user mistake below it is one line on stderr.

    A `BfxError` prints its message and exits with its code (see `errors.py`); a mistake Click
    finds while parsing (a missing argument, `--count abc`, an unknown option) prints Click's
    own message on one line with the command to ask for help, and exits 2. Anything else is a
    bug and keeps its traceback.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Any = None,
        **extra: Any,
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except ParseError as exc:
            _usage_exit(exc)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except BfxError as exc:
            from barfinex_cli.cli.render import error_line

            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except ParseError as exc:
            _usage_exit(exc)


def _usage_exit(exc: ParseError) -> NoReturn:
    """Print a parse error on one line, naming the help of the command it belongs to; exit 2."""
    if isinstance(exc, NoArgsIsHelpError):
        raise exc  # a bare group: Click prints its help, which is what was asked for
    from barfinex_cli.cli.render import error_line

    path = exc.ctx.command_path if exc.ctx is not None else "bfx"
    message = " ".join(exc.format_message().split()).rstrip(".")
    error_line(f"{message} — see `{path} --help`")
    raise typer.Exit(exc.exit_code)


app = typer.Typer(
    cls=BfxGroup,
    name="bfx",
    help=(
        "barfinex-cli: a small trading operating system for the terminal.\n\n"
        "Roles (provider, detector, advisor, inspector, studio) run as their own processes and "
        "talk only through typed, audited events on a Redis Streams bus.\n\n"
        "Examples:\n\n"
        "  bfx doctor\n\n"
        "  bfx events tail --type 'market.*'\n\n"
        "  bfx events query --type detector.signal --since 1h --json\n\n"
        "  bfx trace 01a2105c-df3a-7000-8a1b-d346e336bd8a"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Settings file (default: ./bfx.toml if present).",
            envvar="BFX_CONFIG",
            show_envvar=True,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (default: ~/.bfx).",
            envvar="BFX_HOME",
            show_envvar=True,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Redis URL (default: redis://127.0.0.1:6379/0).",
            envvar="BFX_REDIS_URL",
            show_envvar=True,
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Bus namespace: streams are bfx:NAMESPACE:TYPE.",
            envvar="BFX_NAMESPACE",
            show_envvar=True,
        ),
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="Event bus: redis or memory (in-process, one process only).",
            envvar="BFX_BUS",
            show_envvar=True,
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-rich",
            help="Logs as JSON lines (default when not a TTY).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Global options apply to every command."""
    ctx.obj = State(
        config=config_file,
        overrides={
            "home": data_dir,
            "redis_url": redis_url,
            "namespace": namespace,
            "bus": bus,
            "log_json": log_json,
        },
    )


@app.command()
def version(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the bfx version.

    Example: bfx version --json
    """
    import platform

    if as_json:
        from barfinex_cli.cli.render import print_json

        print_json({"version": __version__, "python": platform.python_version()})
    else:
        typer.echo(f"bfx {__version__} (Python {platform.python_version()})")


app.add_typer(config.app, name="config")
app.add_typer(events.app, name="events")
data.app.command("download")(data_download.download)
data.app.command("gaps")(data_integrity.gaps)
data.app.command("repair")(data_integrity.repair)
app.add_typer(data.app, name="data")
app.add_typer(provider.app, name="provider")
detector.app.command("run")(detector_run.run)
app.add_typer(detector.app, name="detector")
app.add_typer(advisor.app, name="advisor")
app.add_typer(inspector.app, name="inspector")
app.command("doctor")(doctor.doctor)
app.command("trace")(trace.trace)
app.command("up")(up.up)
app.command("backtest")(backtest.backtest)
app.command("optimize")(optimize.optimize)
app.add_typer(paper.app, name="paper")
app.command("studio")(studio.studio)


def run() -> None:
    """Console-script entry point."""
    app()
