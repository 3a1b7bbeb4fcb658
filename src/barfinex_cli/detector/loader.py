"""Load a strategy file the user names, and turn every way it can be wrong into one line.

Loading runs the file's code (it is a Python module), so only the path the user gives is ever
loaded: nothing is discovered or imported by name. The file is compiled and executed under a
unique module name through importlib's spec machinery, without writing bytecode next to it, so an
edited file is always read afresh. Errors come back as `StrategyError` with `file:line: what`:
a syntax error, an unknown indicator (with the close names), a rule that does not validate, a
file that calls `sys.exit`, or one that does not export `strategy` (with the line to add).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import re
import sys
import traceback
from pathlib import Path

from barfinex_cli.detector.indicators import PUBLIC, UnknownIndicator, close_names
from barfinex_cli.detector.strategy import Strategy
from barfinex_cli.errors import NotFound, StrategyError, UsageError

EXAMPLE = (
    'strategy = Strategy(name="mine", symbols=["BTC/USDT"], timeframe="1m", threshold=1.0, '
    'rules=[Rule("rsi_low", ta.rsi(14) < 30, weight=1.0, direction="long")])'
)
_counter = itertools.count()


def load_strategy(path: str | Path) -> Strategy:
    """Run the strategy file at `path` and return its `strategy`.

    Raises:
        NotFound: No such file.
        UsageError: The path is not a `.py` file.
        StrategyError: The file does not compile, fails while running, or exports no valid
            `strategy`; the message starts with `file:line:`.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such strategy file")
    if path.suffix != ".py":
        raise UsageError(f"{path}: a strategy is a Python file (.py)")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file; a strategy is Python source") from None
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise StrategyError(f"{path}:{exc.lineno or 1}: {exc.msg}") from None
    digest = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:10]
    name = f"bfx_strategy_{digest}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise UsageError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:  # SystemExit: sys.exit() must not end bfx silently
        del sys.modules[name]
        raise StrategyError(f"{path}:{_line(exc, path)}: {_describe(exc)}") from None
    strategy = module.__dict__.get("strategy")
    if strategy is None:
        del sys.modules[name]
        raise StrategyError(f"{path}: exports no `strategy`; end the file with e.g. {EXAMPLE}")
    if not isinstance(strategy, Strategy):
        del sys.modules[name]
        raise StrategyError(
            f"{path}: `strategy` is a {type(strategy).__name__}, not a "
            "barfinex_cli.detector.strategy.Strategy"
        )
    return strategy


def _line(exc: BaseException, path: Path) -> int:
    """Return the line of the user's file where `exc` was raised (its innermost frame there)."""
    target = str(path)
    line = 1
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == target and frame.lineno is not None:
            line = frame.lineno
    return line


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return (
            f"the file calls sys.exit({'' if exc.code is None else repr(exc.code)}) while "
            "loading; a strategy file must define `strategy`, not end the program"
        )
    if isinstance(exc, UnknownIndicator | StrategyError):
        return str(exc)
    if isinstance(exc, ImportError) and exc.name == "barfinex_cli.detector.indicators":
        missing = re.search(r"cannot import name '(\w+)'", str(exc))
        if missing:
            word = missing.group(1)
            return f"unknown indicator {word!r}{close_names(word, PUBLIC)}"
    if isinstance(exc, TypeError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
