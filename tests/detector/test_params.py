"""Strategy parameters: `build` declares them; `--param` ranges are checked against them."""

from __future__ import annotations

from pathlib import Path

import pytest

from barfinex_cli.detector.loader import load_strategy, load_strategy_factory
from barfinex_cli.detector.params import Declared, parse_param, parse_params
from barfinex_cli.errors import StrategyError, UsageError

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"
HEAD = (
    "from barfinex_cli.detector import indicators as ta\n"
    "from barfinex_cli.detector.strategy import Rule, Strategy\n"
)
BUILD = (
    "def build(fast: int = 10, slow: int = 20, band: float = 1, kind: str = 'sma',"
    " shorts: bool = False) -> Strategy:\n"
    "    if fast >= slow:\n"
    "        raise ValueError(f'fast {fast} must be below slow {slow}')\n"
    "    return Strategy(name=f'x{fast}_{slow}', symbols=['BTC/USDT'], timeframe='1m',\n"
    "        threshold=1.0, rules=[Rule('up', ta.crosses_above(ta.sma('close', fast),\n"
    "        ta.sma('close', slow)), direction='long')])\n"
    "strategy = build()\n"
)
DECLARED = {
    "fast": Declared("fast", "int", 10),
    "ratio": Declared("ratio", "float", 1.0),
    "ma": Declared("ma", "str", "sma"),
    "shorts": Declared("shorts", "bool", False),
}


def write(tmp_path: Path, body: str, name: str = "p.py") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def test_build_declares_its_parameters_with_types_and_defaults(tmp_path: Path) -> None:
    factory = load_strategy_factory(write(tmp_path, BUILD))
    assert factory.params == {
        "fast": Declared("fast", "int", 10),
        "slow": Declared("slow", "int", 20),
        "band": Declared("band", "float", 1.0),  # an int default annotated float is a float
        "kind": Declared("kind", "str", "sma"),
        "shorts": Declared("shorts", "bool", False),
    }
    assert factory.strategy.name == "x10_20"
    assert factory.build(fast=5, slow=30).name == "x5_30"


def test_a_file_without_build_loads_unchanged_and_declares_nothing() -> None:
    factory = load_strategy_factory(STRATEGIES / "trend_ema_adx.py")
    assert factory.params == {}
    assert factory.build() == factory.strategy
    assert load_strategy(STRATEGIES / "trend_ema_adx.py").name == "trend_ema_adx"


def test_the_sma_cross_example_rebuilds_with_other_periods() -> None:
    factory = load_strategy_factory(STRATEGIES / "sma_cross.py")
    assert set(factory.params) == {"fast", "slow"}
    assert factory.build(fast=5, slow=50).needed_warmup == 51


def test_build_refusing_a_combination_is_a_strategy_error_naming_it(tmp_path: Path) -> None:
    factory = load_strategy_factory(write(tmp_path, BUILD))
    with pytest.raises(StrategyError, match=r"build\(fast=30, slow=20\): fast 30 must be below"):
        factory.build(fast=30, slow=20)
    with pytest.raises(UsageError, match="unknown parameter speed; the file declares fast, slow"):
        factory.build(speed=3)


def test_a_file_with_build_but_no_strategy_is_told_the_line_to_add(tmp_path: Path) -> None:
    path = write(tmp_path, BUILD.replace("strategy = build()\n", ""))
    with pytest.raises(StrategyError, match=r"end the file with strategy = build\(\)$"):
        load_strategy_factory(path)


def test_a_parameter_without_a_usable_default_is_refused_with_the_fix(tmp_path: Path) -> None:
    no_default = BUILD.replace("fast: int = 10", "fast: int").replace("build()", "build(10)")
    path = write(tmp_path, no_default)
    with pytest.raises(UsageError, match="parameter fast has no default; give it one"):
        load_strategy_factory(path)
    listed = BUILD.replace("shorts: bool = False", "shorts: list = None")
    path = write(tmp_path, listed, "n.py")
    with pytest.raises(UsageError, match="shorts defaults to None; a tunable parameter is an int"):
        load_strategy_factory(path)


def test_an_int_range_with_a_step_lists_every_value_up_to_high() -> None:
    space = parse_param("fast=5:30:5", DECLARED)
    assert (space.low, space.high, space.step) == (5, 30, 5)
    assert space.grid() == [5, 10, 15, 20, 25, 30]
    assert parse_param("fast=5:29:5", DECLARED).grid() == [5, 10, 15, 20, 25]  # high on the grid
    assert parse_param("fast=3:5", DECLARED).grid() == [3, 4, 5]  # an int steps by 1


def test_a_float_range_keeps_its_last_point_and_no_float_noise() -> None:
    assert parse_param("ratio=0.1:0.7:0.2", DECLARED).grid() == [0.1, 0.3, 0.5, 0.7]
    continuous = parse_param("ratio=0.5:2", DECLARED)
    assert continuous.step is None
    with pytest.raises(UsageError, match="has no step and --sampler grid needs one"):
        continuous.grid()


def test_choices_are_converted_to_the_parameter_type() -> None:
    assert parse_param("fast=5,10,20", DECLARED).choices == (5, 10, 20)
    assert parse_param("ma=ema, sma", DECLARED).choices == ("ema", "sma")
    assert parse_param("shorts=true,false", DECLARED).choices == (True, False)
    assert parse_param("fast=7", DECLARED).grid() == [7]  # one value pins the parameter


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speed=1:5", r"--param speed: unknown parameter; the strategy declares fast \(int\)"),
        ("fast", "is not name=range; e.g. --param fast=5:30:5"),
        ("fast=1:2:3:4", "a range is low:high or low:high:step"),
        ("fast=30:5:5", "low 30 is above high 5; write fast=5:30:5"),
        ("fast=5:30:0", "the step must be > 0"),
        ("fast=5:30:-5", "the step must be > 0"),
        ("fast=5.5:30", "'5.5' is not an int; fast is an int parameter"),
        ("ratio=a:b", "'a' is not a float"),
        ("ma=1:3", "ma is a str parameter; list its values"),
        ("fast=5,,10", "an empty choice"),
        ("shorts=maybe", "is not true or false"),
    ],
)
def test_a_bad_param_is_one_line_naming_the_fix(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_param(text, DECLARED)
    assert "\n" not in str(caught.value)


def test_a_param_given_twice_or_to_a_file_without_build_is_refused() -> None:
    with pytest.raises(UsageError, match="--param fast is given twice"):
        parse_params(["fast=1:3", "fast=4:5"], DECLARED)
    with pytest.raises(UsageError, match=r"declares no parameters; define def build\("):
        parse_params(["fast=1:3"], {})
