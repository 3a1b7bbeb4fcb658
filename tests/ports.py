"""A spare loopback port, for the real servers the tests start (gateways, health, Redis).

One copy for the whole suite: the port is free when asked and bound by the server a moment later.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
