"""`bfx config`: show the effective settings and where they came from."""

from __future__ import annotations

from typing import Annotated

import typer

from barfinex_cli.cli.state import state_of

app = typer.Typer(help="Read the effective settings.", no_args_is_help=True)


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the effective settings (file < BFX_* environment < flags); secrets are masked.

    Example: bfx --data-dir /tmp/bfx config show --json
    """
    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.errors import mask_url
    from barfinex_cli.runtime.settings import describe, find_config

    state = state_of(ctx)
    settings = state.settings()
    data = describe(settings)
    for key in ("redis_url", "provider_url"):  # a password inside a URL is a secret too
        if isinstance(data.get(key), str):
            data[key] = mask_url(data[key])
    source = find_config(state.config)
    if as_json:
        print_json({"config_file": str(source) if source else None, "settings": data})
        return
    from rich.table import Table

    table = Table(title=f"settings (file: {source or 'none'})", title_justify="left")
    table.add_column("key")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, "-" if value is None else str(value))
    out().print(table)
