"""`python -m barfinex_cli` runs the `bfx` command line."""

from barfinex_cli.cli.main import run

run()
