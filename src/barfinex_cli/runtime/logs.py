"""Logging for every role: rich lines on a terminal, JSON lines otherwise (or with --log-json).

Logs go to stderr: stdout belongs to data that scripts read.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """Format each record as one JSON object with its extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to whatever `sys.stderr` is when the record is emitted (not when set up)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Configure the `bfx` loggers once for this process."""
    use_json = json_lines if json_lines is not None else not sys.stderr.isatty()
    handler: logging.Handler
    if use_json:
        handler = _Stderr()
        handler.setFormatter(JsonLines())
    else:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False)
    root = logging.getLogger("bfx")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class MaskCredentials(logging.Filter):
    """Mask the value of a credential header that websockets logs at DEBUG (`"> %s: %s"`)."""

    HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-bfx-token"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in self.HEADERS:
            record.args = (args[0], "***")
        return True


def mask_websocket_credentials() -> None:
    """Keep tokens out of websockets' DEBUG header lines, on the client and the server side."""
    for name in ("websockets.client", "websockets.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskCredentials) for f in logger.filters):
            logger.addFilter(MaskCredentials())
