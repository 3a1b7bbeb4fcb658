"""Load a policy file into a `PolicySet`, or refuse it with the file, the key and the reason.

The inspector fails closed: a file that does not parse, a key nobody knows, a value out of
bounds, an override that breaks a rule once merged — each is a `ConfigError` naming where, and
the inspector does not start (or, on a reload, keeps the policies it has). Overrides are merged
here, once, for every symbol, strategy and symbol-strategy pair the file names, and validated
as merged; the governor then looks limits up by dictionary, never merging on the hot path.
Merge order: defaults, then the strategy's keys, then the symbol's (the most specific wins).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from barfinex_cli.errors import ConfigError
from barfinex_cli.inspector.policies.base import day_start
from barfinex_cli.inspector.policies.config import OVERRIDABLE, Limits, Override, PolicyFile

_Key = tuple[str | None, str | None]

MAX_POLICY_BYTES = 1 << 20
"""A policy file is a few kilobytes; one past a mebibyte is a mistake, refused before parsing."""
MAX_COMBINATIONS = 10_000
"""Override tables merged and validated at load: symbols + strategies + symbols x strategies.

Each costs about 0.15 ms and its own `Limits`, and a reload runs on the inspector's event loop:
10,000 is about 1.5 s; 1,000 symbols by 1,000 strategies (a 90 KB file) took 216 s and
gigabytes.
"""


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A validated policy file with its overrides merged: what the governor evaluates against."""

    rules: PolicyFile
    source: str
    digest: str
    """First 12 hex digits of the file's SHA-256: which version of the file is in force."""
    day_zone: ZoneInfo
    _limits: Mapping[_Key, Limits] = field(repr=False)

    def limits(self, symbol: str, strategy: str) -> Limits:
        """Return the per-trade limits for `symbol` traded by `strategy`, overrides applied."""
        table = self._limits
        return (
            table.get((symbol, strategy))
            or table.get((symbol, None))
            or table.get((None, strategy))
            or table[(None, None)]
        )

    def day_start(self, now: datetime) -> datetime:
        """Return when the trading day holding `now` began: local midnight of `timezone`, in UTC.

        The service rolls its daily counters (`trades_today`, `day_start_equity`...) here, so they
        agree with the daily limits the policies judge.
        """
        return day_start(now, self.day_zone)

    def describe(self) -> dict[str, Any]:
        """Return the file as JSON-ready data with its source and digest (for `/policies`)."""
        return {
            "source": self.source,
            "digest": self.digest,
            **self.rules.model_dump(mode="json"),
        }


def default_policy_path() -> Path:
    """Return the path of the policy file shipped in the package (what `bfx up` uses)."""
    return Path(str(resources.files("barfinex_cli.inspector") / "default_policies.toml"))


def load_policies(path: Path) -> PolicySet:
    """Read and validate the policy file at `path`.

    Raises:
        ConfigError: The file is missing, unreadable, not TOML or breaks a rule; the message
            names the file, the key and the reason.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
            size = max(len(raw), path.stat().st_size)
    except FileNotFoundError:
        raise ConfigError(f"policy file {path} does not exist — check the --policy path") from None
    except OSError as exc:
        raise ConfigError(f"policy file {path}: cannot read it ({exc.strerror})") from None
    _check_size(size, str(path))
    return parse_policies(raw, str(path))


def _check_size(size: int, source: str) -> None:
    if size > MAX_POLICY_BYTES:
        raise ConfigError(
            f"{source}: {size} bytes; a policy file is at most {MAX_POLICY_BYTES} bytes "
            "(the packaged one is under 4 KB) — is this the right file?"
        )


def parse_policies(raw: bytes, source: str) -> PolicySet:
    """Validate the policy file's bytes; `source` names it in errors and in `PolicySet.source`.

    Raises:
        ConfigError: As `load_policies`.
    """
    _check_size(len(raw), source)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a text file (expected UTF-8 TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib nests arrays and tables by recursion
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None
    try:
        rules = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source, (), PolicyFile)) from None
    table = _merge_all(rules, source)
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return PolicySet(rules, source, digest, ZoneInfo(rules.timezone), table)


def _merge_all(rules: PolicyFile, source: str) -> dict[_Key, Limits]:
    symbols, strategies = len(rules.symbols), len(rules.strategies)
    combinations = symbols + strategies + symbols * strategies
    if combinations > MAX_COMBINATIONS:
        raise ConfigError(
            f"{source}: {symbols} symbol overrides and {strategies} strategy overrides are "
            f"{combinations} combinations to merge and check; at most {MAX_COMBINATIONS} — "
            "override fewer symbols or strategies"
        )
    base = {name: getattr(rules, name).model_dump() for name in OVERRIDABLE}
    table: dict[_Key, Limits] = {(None, None): Limits.model_validate(base)}
    for strategy, over in rules.strategies.items():
        table[(None, strategy)] = _merged(base, [over], source, ("strategies", strategy))
    for symbol, over in rules.symbols.items():
        table[(symbol, None)] = _merged(base, [over], source, ("symbols", symbol))
        for strategy, s_over in rules.strategies.items():
            where = ("symbols", symbol, "+ strategies", strategy)
            table[(symbol, strategy)] = _merged(base, [s_over, over], source, where)
    return table


def _merged(
    base: Mapping[str, Mapping[str, Any]],
    overrides: Sequence[Override],
    source: str,
    where: tuple[str, ...],
) -> Limits:
    merged = {name: dict(section) for name, section in base.items()}
    for over in overrides:
        for name in OVERRIDABLE:
            keys = getattr(over, name)
            if keys:
                merged[name].update(keys)
    try:
        return Limits.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source, where, Limits)) from None


def _explain(
    exc: ValidationError, source: str, prefix: tuple[str, ...], root: type[BaseModel]
) -> str:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    dotted = ".".join((*prefix, *loc)).replace(". + ", " + ") or "?"
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        known = ", ".join(sorted(model.model_fields))
        reason = f"unknown key (known keys here: {known})"
        if model is Override and loc[-1] in PolicyFile.model_fields:
            reason = f"[{loc[-1]}] is portfolio-wide and cannot be overridden (only {known})"
    elif err["type"] == "missing":
        reason = "required key is missing"
    return f"{source}: key {dotted!r}: {reason}"


def _model_at(root: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel]:
    """Return the model that holds the keys at `path` (dict entries and tuple indexes skipped)."""
    model = root
    for part in path:
        if part not in model.model_fields:
            continue  # a dict key (a symbol, a strategy, a group) or a list index
        model = _inner_model(model.model_fields[part].annotation) or model
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
