"""Tunable strategy parameters: what a strategy file declares, and the ranges `--param` asks for.

A strategy file declares its parameters by defining a factory with a default for each,
`def build(fast: int = 10, slow: int = 20) -> Strategy`, and exporting `strategy = build()`; the
loader reads the factory's signature into `Declared` parameters. `bfx optimize --param fast=5:30:5`
turns each `--param` into a `Space` (an int or float range with a step, or a list of choices) after
checking it against what the file declares, so every mistake is one line naming the fix before any
trial runs. Pure: no optuna here; `kernel/optimize` maps a `Space` onto optuna's suggestions.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from barfinex_cli.errors import UsageError

ParamValue = int | float | str | bool
Kind = Literal["int", "float", "str", "bool"]
KINDS: dict[type, Kind] = {bool: "bool", int: "int", float: "float", str: "str"}
EXAMPLE = "e.g. --param fast=5:30:5 (low:high:step), --param ratio=0.5:2.0:0.25, --param ma=ema,sma"


@dataclass(frozen=True, slots=True)
class Declared:
    """One parameter of a strategy file's `build`: its name, type and default."""

    name: str
    kind: Kind
    default: ParamValue

    def convert(self, text: str) -> ParamValue:
        """Return `text` as a value of this parameter's type, or raise a one-line `UsageError`."""
        text = text.strip()
        try:
            if self.kind == "int":
                return int(text)
            if self.kind == "float":
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError(text)
                return value
        except ValueError:
            article = "an" if self.kind == "int" else "a"
            raise UsageError(
                f"--param {self.name}: {text!r} is not {article} {self.kind}; {self.name} is "
                f"{article} {self.kind} parameter (default {self.default!r}) — {EXAMPLE}"
            ) from None
        if self.kind == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise UsageError(f"--param {self.name}: {text!r} is not true or false")
        return text


@dataclass(frozen=True, slots=True)
class Space:
    """The values one parameter may take in a search: a stepped range or a list of choices."""

    name: str
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    """None for a continuous float range (random and TPE sample it; a grid cannot)."""
    choices: tuple[ParamValue, ...] = ()

    @property
    def is_range(self) -> bool:
        """Return whether this is a numeric range (else a list of choices)."""
        return not self.choices

    def grid(self) -> list[ParamValue]:
        """Return every value a grid search visits, in order.

        Raises:
            UsageError: A float range without a step (a grid needs the step).
        """
        if self.choices:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.step is None:
            raise UsageError(
                f"--param {self.name}={self.low}:{self.high} has no step and --sampler grid "
                f"needs one: write {self.name}={self.low}:{self.high}:STEP, or use --sampler tpe"
            )
        count = round((self.high - self.low) / self.step) + 1
        if self.kind == "int":
            return [int(self.low + i * self.step) for i in range(count)]
        return [_tidy(self.low + i * self.step) for i in range(count)]

    def describe(self) -> str:
        """Return the space as the user would write it."""
        if self.choices:
            return f"{self.name}=" + ",".join(str(c) for c in self.choices)
        step = "" if self.step is None else f":{self.step}"
        return f"{self.name}={self.low}:{self.high}{step}"


def declared_of(build: Callable[..., object], where: str) -> dict[str, Declared]:
    """Return the parameters `build` declares, each with its type and default.

    Raises:
        UsageError: A parameter has no default, or a default that is not an int, float, str
            or bool (the types a search can vary).
    """
    out: dict[str, Declared] = {}
    for p in inspect.signature(build).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise UsageError(
                f"{where}: build() parameter {p.name} must be a plain named parameter with a "
                f"default, e.g. def build(fast: int = 10, slow: int = 20) -> Strategy"
            )
        if p.default is p.empty:
            raise UsageError(
                f"{where}: build() parameter {p.name} has no default; give it one "
                f"(e.g. {p.name}: int = 10) so `strategy = build()` works"
            )
        kind = KINDS.get(type(p.default))
        annotation = (
            p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        )
        if kind == "int" and annotation == "float":
            kind = "float"
        if kind is None:
            raise UsageError(
                f"{where}: build() parameter {p.name} defaults to {p.default!r}; a tunable "
                "parameter is an int, float, str or bool"
            )
        out[p.name] = Declared(p.name, kind, float(p.default) if kind == "float" else p.default)
    return out


def parse_params(texts: Iterable[str], declared: Mapping[str, Declared]) -> dict[str, Space]:
    """Return the search space `--param` options ask for, checked against the declared ones.

    Raises:
        UsageError: An unknown name, a repeated one, bad syntax, low > high or a step <= 0.
    """
    spaces: dict[str, Space] = {}
    for text in texts:
        space = parse_param(text, declared)
        if space.name in spaces:
            raise UsageError(f"--param {space.name} is given twice; give each parameter once")
        spaces[space.name] = space
    return spaces


def parse_param(text: str, declared: Mapping[str, Declared]) -> Space:
    """Return the `Space` of one `--param name=low:high[:step]` or `name=a,b,c`."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise UsageError(f"--param {text!r} is not name=range; {EXAMPLE}")
    if name not in declared:
        if not declared:
            raise UsageError(
                f"--param {name}: the strategy declares no parameters; define "
                "def build(fast: int = 10, slow: int = 20) -> Strategy and end the file with "
                "strategy = build() (see docs/optimize.md)"
            )
        known = ", ".join(f"{d.name} ({d.kind})" for d in declared.values())
        raise UsageError(f"--param {name}: unknown parameter; the strategy declares {known}")
    param = declared[name]
    if ":" in spec and "," not in spec:
        return _range(param, spec)
    values = [part for part in spec.split(",")]
    if any(not v.strip() for v in values):
        raise UsageError(f"--param {text!r}: an empty choice; write {name}=a,b,c")
    choices = tuple(dict.fromkeys(param.convert(v) for v in values))
    return Space(name, param.kind, choices=choices)


def _range(param: Declared, spec: str) -> Space:
    parts = spec.split(":")
    name = param.name
    if param.kind in ("str", "bool"):
        raise UsageError(
            f"--param {name}={spec}: {name} is a {param.kind} parameter; list its values, "
            f"e.g. {name}=a,b,c"
        )
    if len(parts) not in (2, 3) or any(not p.strip() for p in parts):
        raise UsageError(f"--param {name}={spec}: a range is low:high or low:high:step; {EXAMPLE}")
    low, high = param.convert(parts[0]), param.convert(parts[1])
    assert isinstance(low, int | float) and isinstance(high, int | float)
    step: int | float | None = None
    if len(parts) == 3:
        value = param.convert(parts[2])
        assert isinstance(value, int | float)
        step = value
    elif param.kind == "int":
        step = 1
    if low > high:
        raise UsageError(
            f"--param {name}={spec}: low {low} is above high {high}; write {name}={high}:{low}"
            + ("" if step is None else f":{step}")
        )
    if step is not None and step <= 0:
        raise UsageError(f"--param {name}={spec}: the step must be > 0, e.g. {name}={low}:{high}:1")
    if step is not None:
        high = _last_on_grid(low, high, step, param.kind)
    return Space(name, param.kind, low=low, high=high, step=step)


def _last_on_grid(low: float, high: float, step: float, kind: Kind) -> float | int:
    """Return the highest value low + k*step <= high (optuna needs high on the step grid)."""
    if kind == "int":
        return int(low + (int(high - low) // int(step)) * step)
    try:  # decimal arithmetic: 0.1:0.7:0.2 must end on 0.7, not 0.5 from a float floor
        d_low, d_step = Decimal(str(low)), Decimal(str(step))
        count = int((Decimal(str(high)) - d_low) / d_step)
        return float(d_low + count * d_step)
    except InvalidOperation:  # pragma: no cover - finite floats always convert
        return high


def _tidy(value: float) -> float:
    """Return `value` without float noise from repeated addition (0.30000000000000004 -> 0.3)."""
    return float(f"{value:.12g}")
