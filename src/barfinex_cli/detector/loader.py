"""Load a strategy file the user names, and turn every way it can be wrong into one line.

Loading runs the file's code (it is a Python module), so only the path the user gives is ever
loaded: nothing is discovered or imported by name. The file is compiled and executed under a
unique module name through importlib's spec machinery, without writing bytecode next to it, so an
edited file is always read afresh. Errors come back as `StrategyError` with `file:line: what`:
a syntax error, an unknown indicator (with the close names), a rule that does not validate, a
file that calls `sys.exit`, or one that does not export `strategy` (with the line to add).
`load_strategy_factory` also returns the file's `build` factory and the parameters it declares,
which `bfx optimize` varies (see `detector/params.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from barfinex_cli.detector.indicators import PUBLIC, UnknownIndicator, close_names
from barfinex_cli.detector.params import Declared, ParamValue, declared_of
from barfinex_cli.detector.strategy import Strategy, guard
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
    return load_strategy_factory(path).strategy


@dataclass(frozen=True)
class StrategyFactory:
    """A loaded strategy file: its `strategy`, and how to rebuild it with other parameters.

    A file that defines `def build(fast: int = 10, ...) -> Strategy` declares those parameters
    (see `detector/params.py`); a file without `build` declares none and `build()` returns its
    `strategy` as it is.
    """

    path: Path
    strategy: Strategy
    """What the file exports as `strategy` (for a file with `build`, usually `build()`)."""
    params: dict[str, Declared] = field(default_factory=dict)
    factory: Callable[..., object] | None = None

    def build(self, **values: ParamValue) -> Strategy:
        """Return the strategy built with these parameter values (the rest keep their defaults).

        Raises:
            UsageError: A name the file does not declare.
            StrategyError: `build` fails or returns something other than a `Strategy`.
        """
        if unknown := sorted(set(values) - set(self.params)):
            known = ", ".join(self.params) or "none"
            raise UsageError(
                f"{self.path}: unknown parameter {', '.join(unknown)}; the file declares {known}"
            )
        if self.factory is None:
            return self.strategy
        args = ", ".join(f"{k}={v!r}" for k, v in values.items())
        with guard(self.strategy.name, f"build({args})"):
            built = self.factory(**values)
        if not isinstance(built, Strategy):
            raise StrategyError(
                f"{self.path}: build({args}) returned a {type(built).__name__}, not a Strategy"
            )
        return built


def load_strategy_factory(path: str | Path) -> StrategyFactory:
    """Run the strategy file at `path`; return its `strategy` and its parameter factory.

    Raises:
        NotFound: No such file.
        UsageError: The path is not a `.py` file, or `build` declares a parameter a search
            cannot vary (no default, or a default that is not an int, float, str or bool).
        StrategyError: As `load_strategy`.
    """
    path = Path(path)
    namespace = _execute(path)
    build = namespace.get("build")
    strategy = namespace.get("strategy")
    if strategy is None:
        hint = "strategy = build()" if callable(build) else f"e.g. {EXAMPLE}"
        raise StrategyError(f"{path}: exports no `strategy`; end the file with {hint}")
    if not isinstance(strategy, Strategy):
        raise StrategyError(
            f"{path}: `strategy` is a {type(strategy).__name__}, not a "
            "barfinex_cli.detector.strategy.Strategy"
        )
    if not callable(build):
        return StrategyFactory(path, strategy)
    return StrategyFactory(path, strategy, declared_of(build, str(path)), build)


def _execute(path: Path) -> dict[str, object]:
    """Compile and run the file under a unique module name; return its namespace."""
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
    except (ValueError, MemoryError, RecursionError) as exc:  # NUL bytes, nesting too deep
        why = str(exc) or "nested too deeply for the Python parser"
        raise StrategyError(f"{path}:1: {why}") from None
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
    if not isinstance(strategy, Strategy):
        del sys.modules[name]  # refused below: keep no module of a file that failed
    return module.__dict__


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
