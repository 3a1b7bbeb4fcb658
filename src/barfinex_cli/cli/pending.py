"""Command groups whose role has not landed yet: listed in the tree, and honest when invoked."""

from __future__ import annotations

import typer

from barfinex_cli.cli.render import error_line

PENDING: dict[str, tuple[str, str]] = {
    "provider": ("Provider role: exchange connectors, candles, gaps, gateway.", "#3"),
    "data": ("Market data: download, import, list, gaps, repair, export.", "#3"),
    "detector": ("Detector role: strategy files of weighted rules, signals.", "#4"),
    "advisor": ("Advisor role: the 8-stage decision pipeline.", "a later issue"),
    "inspector": ("Inspector role: risk governor, protective orders, audit.", "a later issue"),
    "studio": ("Studio: the terminal UI.", "a later issue"),
    "backtest": ("Backtest a strategy over history.", "a later issue"),
    "up": ("Start the whole stack on the embedded default.", "a later issue"),
}


def _make(name: str, summary: str, lands: str) -> typer.Typer:
    group = typer.Typer(
        help=f"{summary} (not yet available: lands with issue {lands})",
        invoke_without_command=True,
        add_help_option=True,
    )

    @group.callback()
    def _unavailable() -> None:
        error_line(f"`bfx {name}` is not yet available; it lands with issue {lands}")
        raise typer.Exit(1)

    return group


def mount(app: typer.Typer, skip: frozenset[str] = frozenset()) -> None:
    """Add a group for every pending command not in `skip`."""
    for name, (summary, lands) in PENDING.items():
        if name not in skip:
            app.add_typer(_make(name, summary, lands), name=name)
