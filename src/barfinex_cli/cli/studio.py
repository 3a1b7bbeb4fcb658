"""`bfx studio`: open the Textual operations terminal on a provider's gateway.

Thin: it resolves the URL, the token and the theme, then runs `studio.app.StudioApp` (Textual is
imported only here, inside the command, so `bfx --help` stays fast).
"""

from __future__ import annotations

from typing import Annotated

import typer

from barfinex_cli.cli.state import state_of


def studio(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The provider gateway (default: settings.provider_url)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="BFX_TOKEN",
            help="Gateway token (default: BFX_TOKEN, else DATA_DIR/token).",
            show_envvar=False,
        ),
    ] = None,
    theme: Annotated[
        str | None,
        typer.Option("--theme", help="A Textual theme, e.g. nord, gruvbox, textual-light."),
    ] = None,
    poll: Annotated[
        float, typer.Option("--poll", min=0.5, help="Seconds between REST refreshes.")
    ] = 5.0,
    web: Annotated[
        bool,
        typer.Option("--web", help="Serve the studio to a browser on 127.0.0.1 (textual-serve)."),
    ] = False,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The --web page's port.")
    ] = 8090,
) -> None:
    """Open the studio: market, signals, decisions, risk, capital and services, keys 1-6.

    It observes the provider's REST routes and its /ws stream (and the advisor and inspector
    through the provider's proxy); its only writes are the inspector's stand-down and resume,
    each confirmed first. `?` shows the keys.

    With --web the same app is served to a browser at http://127.0.0.1:PORT; the token goes to
    each app process through its environment, never into the page (docs/studio.md).

    Example: bfx studio --url http://127.0.0.1:8081 --theme nord  (or: bfx studio --web)
    """
    from barfinex_cli.errors import UsageError
    from barfinex_cli.runtime.client import token_from

    settings = state_of(ctx).settings()
    base = (url or settings.provider_url).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url {base!r}: give an http:// or https:// address of the provider")
    secret = token or token_from(settings)

    from barfinex_cli.studio.app import StudioApp

    app = StudioApp(base, secret, poll_s=poll)
    if theme is not None:
        if theme not in app.available_themes:
            names = ", ".join(sorted(app.available_themes))
            raise UsageError(f"--theme {theme!r}: unknown; choose one of {names}")
        app.theme = theme
    if web:
        from barfinex_cli.studio.web import WebOptions, page_url, serve

        typer.echo(f"bfx studio: serving on {page_url(port)} (Ctrl+C stops)", err=True)
        serve(WebOptions(base, secret, theme, poll, port))
        return
    app.run()
