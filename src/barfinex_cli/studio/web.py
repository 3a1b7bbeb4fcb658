"""`bfx studio --web`: the same studio app, served to a browser by textual-serve on loopback.

textual-serve runs a small aiohttp server whose page (its JavaScript and fonts ship in the wheel,
so it works offline) opens a websocket; for each browser tab it starts the app as a subprocess
driven by Textual's web driver. Here that subprocess is `python -m barfinex_cli studio` with the
same `--url`, `--theme` and `--poll`, so the browser and the terminal run one codebase.

The gateway token never reaches the page or a command line (where `ps` would show it): the
server puts it in its own environment as `BFX_TOKEN`, which every app subprocess inherits and
`bfx studio` reads. With no token found, the app's token screen asks for one in the page. The
server binds 127.0.0.1 only; whoever can reach that port uses the studio with the token, so it
stays on the machine (reach it from elsewhere through an SSH tunnel).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from dataclasses import dataclass

from barfinex_cli.errors import ConfigError

DEFAULT_PORT = 8090
HOST = "127.0.0.1"


@dataclass(frozen=True)
class WebOptions:
    """What the served app runs against and where the page is served."""

    url: str
    token: str | None
    theme: str | None = None
    poll_s: float = 5.0
    port: int = DEFAULT_PORT


def app_command(options: WebOptions, python: str = sys.executable) -> str:
    """Return the shell command textual-serve runs per browser tab (no token in it)."""
    parts = [python, "-m", "barfinex_cli", "studio", "--url", options.url,
             "--poll", str(options.poll_s)]  # fmt: skip
    if options.theme:
        parts += ["--theme", options.theme]
    return shlex.join(parts)


def port_free(port: int) -> bool:
    """Tell whether `port` can be bound on 127.0.0.1 (checked before serving, for a clear error)."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def page_url(port: int) -> str:
    """Return the address to open in a browser."""
    return f"http://{HOST}:{port}"


def serve(options: WebOptions) -> None:
    """Serve the studio at `page_url(options.port)` until Ctrl+C (or SIGTERM).

    Raises:
        ConfigError: The port is taken.
    """
    from textual_serve.server import Server

    if not port_free(options.port):
        raise ConfigError(f"--port {options.port}: 127.0.0.1:{options.port} is in use; "
                          "pick another with --port")  # fmt: skip
    if options.token:
        os.environ["BFX_TOKEN"] = options.token  # inherited by each app subprocess
    server = Server(app_command(options), host=HOST, port=options.port, title="bfx studio")
    server.serve()
