"""Every number in the policy file is finite and bounded, so nothing that loads can overflow later.

The keys are found by walking the schema, not listed by hand: a numeric key added later is
checked too. A value that loads must then evaluate (cooldown, loss streak, drawdown stand-down,
max hold) without raising, on start as on a reload.
"""

from __future__ import annotations

import math
import types
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from barfinex_cli.errors import ConfigError
from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.model import Position
from barfinex_cli.inspector.policies import PolicyWatcher, load_policies, parse_policies
from barfinex_cli.inspector.policies.config import MAX_MINUTES, PolicyFile, Section
from inspector.samples import FLAT, INTENT, NOW, D


def _numeric(annotation: Any) -> type | None:
    """Return float, int or Decimal when `annotation` is one of them (or Optional of one)."""
    if get_origin(annotation) in (Union, types.UnionType):
        found = [_numeric(arg) for arg in get_args(annotation) if arg is not type(None)]
        return found[0] if len(found) == 1 else None
    if get_origin(annotation) is not None and hasattr(annotation, "__metadata__"):
        return _numeric(get_args(annotation)[0])
    if annotation in (float, int, Decimal):
        return annotation  # type: ignore[no-any-return]
    return None


def _sections(model: type[BaseModel], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Return the dotted path of every numeric key under `model`."""
    keys: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            keys.extend(_sections(annotation, (*prefix, name)))
        elif _numeric(annotation) is not None and annotation is not bool:
            keys.append((*prefix, name))
    return keys


NUMERIC_KEYS = _sections(PolicyFile, ())
GROUP = "[correlation.groups.majors]\nsymbols = ['BTC/USDT', 'ETH/USDT']\n"


def _file(path: tuple[str, ...], value: str) -> tuple[str, str]:
    """Return a policy file setting `path` to `value`, and the key the loader must name."""
    if path[:1] == ("correlation",):  # inside a group of its dict
        return f"{GROUP}max_open = {value}\n", "correlation.groups.majors.max_open"
    *section, key = path
    head = f"[{'.'.join(section)}]\n" if section else ""
    return f"{head}{key} = {value}\n", ".".join(path)


def test_the_schema_walk_finds_every_numeric_key_of_every_section() -> None:
    found = {".".join(p) for p in NUMERIC_KEYS}
    listed = {"cooldown.after_loss_minutes", "hold.max_hold_minutes",
              "drawdown.stand_down_minutes", "activity.loss_streak_stand_down_minutes",
              "execution.max_close_defer_minutes", "size.max_notional", "size.step",
              "market.max_spread_bps", "exposure.max_leverage", "activity.max_trades_per_day",
              "drawdown.daily_loss_pct", "risk.per_trade_pct"}  # fmt: skip
    assert listed <= found
    # groups live in a dict: their count is checked through the [correlation.groups.X] table
    assert _numeric(PolicyFile.model_fields["correlation"].annotation) is None


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308", "9223372036854775807", "-1"])
@pytest.mark.parametrize("path", [*NUMERIC_KEYS, ("correlation", "max_open")], ids=".".join)
def test_every_numeric_key_refuses_non_finite_huge_and_negative_values(
    path: tuple[str, ...], value: str
) -> None:
    text, key = _file(path, value)
    with pytest.raises(ConfigError) as caught:
        parse_policies(text.encode(), "policies.toml")
    message = str(caught.value)
    assert message.startswith(f"policies.toml: key '{key}': "), message
    assert "\n" not in message


@pytest.mark.parametrize("section", ["symbols.'BTC/USDT'", "strategies.scalp"])
def test_an_override_is_bounded_like_the_default(section: str) -> None:
    text = f"[{section}.hold]\nmax_hold_minutes = 1e308\n"
    with pytest.raises(ConfigError, match=r"hold.max_hold_minutes': .*less than or equal"):
        parse_policies(text.encode(), "policies.toml")


MINUTE_KEYS = [
    "cooldown.after_loss_minutes",
    "hold.max_hold_minutes",
    "drawdown.stand_down_minutes",
    "activity.loss_streak_stand_down_minutes",
    "execution.max_close_defer_minutes",
]


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(MINUTE_KEYS),
    minutes=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**20)),
)
def test_any_minutes_value_is_refused_or_evaluates_without_overflow(
    key: str, minutes: float
) -> None:
    value = repr(minutes) if not isinstance(minutes, float) or math.isfinite(minutes) else None
    if value is None:
        value = "nan" if math.isnan(minutes) else ("inf" if minutes > 0 else "-inf")
    text = f"drawdown.daily_loss_pct = 1\nactivity.max_loss_streak = 1\n{key} = {value}\n"
    try:
        loaded = parse_policies(text.encode(), "policies.toml")
    except ConfigError as exc:
        assert f"key '{key}'" in str(exc)
        assert not (0 < minutes <= MAX_MINUTES)  # only out-of-range values are refused
        return
    assert 0 < minutes <= MAX_MINUTES
    governor = Governor(loaded)
    lost = replace(FLAT, equity=D(9_000), loss_streak=1, last_loss_at=NOW)
    assert governor.evaluate(INTENT, lost, NOW).action == "STAND_DOWN"
    assert governor.check(lost, NOW) is not None
    held = Position("BTC/USDT", "trend", "long", D(1), D(100), NOW - timedelta(days=400), True)
    assert len(governor.expired([held], NOW)) == (1 if key == "hold.max_hold_minutes" else 0)


def test_a_reload_to_infinite_minutes_keeps_the_policies_in_force(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text("[cooldown]\nafter_loss_minutes = 15\n")
    watcher = PolicyWatcher(path)
    before = watcher.policies
    path.write_text("[cooldown]\nafter_loss_minutes = inf\n")
    found = watcher.poll()
    assert found is not None and found.policies is None and found.alert is not None
    assert f"{path}: key 'cooldown.after_loss_minutes': " in found.alert
    assert watcher.policies is before


def _overrides(symbols: int, strategies: int) -> str:
    return "".join(
        [f'[symbols."S{i}/USDT".size]\nmax_notional = 100\n' for i in range(symbols)]
        + [f"[strategies.s{i}.risk]\nper_trade_pct = 0.5\n" for i in range(strategies)]
    )


def test_a_file_too_large_or_naming_too_many_overrides_is_refused_before_merging(
    tmp_path: Path,
) -> None:
    # found by an audit: every symbol x strategy pair is merged and validated at load, so 1,000
    # symbols and 1,000 strategies (a 90 KB file) took 216 s and gigabytes, and 300 x 300 froze
    # a running inspector's event loop for 19 s on a reload (its lease lapses after 8 s)
    with pytest.raises(ConfigError) as raised:
        parse_policies(_overrides(101, 100).encode(), "p.toml")
    assert str(raised.value) == (
        "p.toml: 101 symbol overrides and 100 strategy overrides are 10301 combinations to "
        "merge and check; at most 10000 — override fewer symbols or strategies"
    )
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# padding\n" * 110_000)  # 1.1 MB
    with pytest.raises(ConfigError, match=r"huge.toml: 1100000 bytes; a policy file is at most"):
        load_policies(huge)
    with pytest.raises(ConfigError, match="bytes; a policy file is at most"):
        parse_policies(huge.read_bytes(), "huge.toml")
    fine = parse_policies(_overrides(20, 20).encode(), "p.toml")
    assert fine.limits("S3/USDT", "s4").risk.per_trade_pct == Decimal("0.5")
    assert fine.limits("S3/USDT", "s4").size.max_notional == Decimal(100)
