"""Loading a strategy file: the file the user names, and one line for each way it can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.strategy import Strategy
from barfinex_cli.errors import NotFound, StrategyError, UsageError

HEAD = (
    "from barfinex_cli.detector import indicators as ta\n"
    "from barfinex_cli.detector.strategy import Rule, Strategy\n"
)


def write(tmp_path: Path, body: str, name: str = "mine.py") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def test_a_valid_file_gives_its_strategy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'strategy = Strategy(name="m", symbols=["BTC/USDT"], timeframe="5m",\n'
        '    threshold=1.0, rules=[Rule("low", ta.rsi(14) < 30, 1.0, "long")])\n',
    )
    strategy = load_strategy(path)
    assert isinstance(strategy, Strategy)
    assert (strategy.name, strategy.timeframe, strategy.effective_warmup) == ("m", "5m", 15)


def test_an_edited_file_is_read_afresh(tmp_path: Path) -> None:
    body = 'strategy = Strategy("{}", ["X/Y"], "1m", [Rule("a", ta.close > 1)], threshold=1.0)\n'
    path = write(tmp_path, body.format("first"))
    assert load_strategy(path).name == "first"
    write(tmp_path, body.format("again"))  # same size, same second: no stale bytecode
    assert load_strategy(path).name == "again"
    assert not (tmp_path / "__pycache__").exists()


def test_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1\nstrategy = Strategy(name=\n")
    with pytest.raises(StrategyError, match=rf"^{path}:4: '\(' was never closed$"):
        load_strategy(path)


def test_a_file_without_strategy_says_what_to_export(tmp_path: Path) -> None:
    path = write(tmp_path, "rules = []\n")
    with pytest.raises(
        StrategyError,
        match=r"exports no `strategy`; end the file with e\.g\. "
        r"strategy = Strategy\(name=",
    ):
        load_strategy(path)
    other = write(tmp_path, "strategy = {'name': 'x'}\n", "dict.py")
    with pytest.raises(StrategyError, match="`strategy` is a dict, not a"):
        load_strategy(other)


def test_an_unknown_indicator_names_the_close_ones_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\nfast = ta.emaa('close', 12)\n")
    with pytest.raises(
        StrategyError,
        match=rf"^{path}:4: unknown indicator ta\.emaa; "
        r"did you mean ta\.ema",
    ):
        load_strategy(path)
    imported = write(tmp_path, "from barfinex_cli.detector.indicators import bolinger\n", "i.py")
    with pytest.raises(
        StrategyError,
        match=r":3: unknown indicator 'bolinger'; did you mean "
        r"bollinger",
    ):
        load_strategy(imported)


def test_an_invalid_rule_or_strategy_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'r = Rule("a", ta.rsi(14))\n')
    with pytest.raises(
        StrategyError,
        match=rf"^{path}:3: rule a: the condition rsi\(14\) is a "
        r"number; compare it",
    ):
        load_strategy(path)
    warm = write(
        tmp_path,
        'strategy = Strategy("s", ["X/Y"], "1m",\n'
        '    [Rule("a", ta.adx(14) > 25, 1.0, "long")], 1.0, warmup=5)\n',
        "w.py",
    )
    with pytest.raises(StrategyError, match=r":3: warmup=5 is shorter than the 28 candles"):
        load_strategy(warm)


def test_any_other_failure_while_loading_is_one_line_with_its_type(tmp_path: Path) -> None:
    path = write(tmp_path, "def f():\n    return {}['k']\nx = f()\n")
    with pytest.raises(StrategyError, match=rf"^{path}:4: KeyError: 'k'$"):
        load_strategy(path)


def test_missing_or_non_python_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such strategy file"):
        load_strategy(tmp_path / "nope.py")
    text = tmp_path / "s.txt"
    text.write_text("strategy = 1\n")
    with pytest.raises(UsageError, match=r"a strategy is a Python file \(\.py\)"):
        load_strategy(text)


def test_a_period_below_one_is_refused_where_it_is_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'strategy = Strategy(name="m", symbols=["BTC/USDT"], timeframe="1m",\n'
        '    threshold=1.0, rules=[Rule("low", ta.rsi(0) < 30, 1.0, "long")])\n',
    )
    with pytest.raises(
        StrategyError,
        match=rf"^{path}:4: ta\.rsi: the period must be a whole number of candles >= 1, not 0$",
    ):
        load_strategy(path)


@pytest.mark.parametrize("call", ["ta.ema(n=-3)", "ta.macd(0)", "ta.adx(0)", "ta.atr(2.5)"])
def test_every_period_is_checked_before_anything_divides_by_it(tmp_path: Path, call: str) -> None:
    path = write(tmp_path, f"x = {call}\n")
    with pytest.raises(StrategyError, match="the period must be a whole number") as refused:
        load_strategy(path)
    assert "ZeroDivision" not in str(refused.value)


def test_a_negative_weight_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'strategy = Strategy(name="m", symbols=["BTC/USDT"], timeframe="1m", threshold=1.0,\n'
        '    rules=[Rule("up", ta.close > 1, 2.0, "long"),\n'
        '           Rule("no", ta.close > 2, -1.0, "long")])\n',
    )
    with pytest.raises(StrategyError, match=r"rule no: weight -1 is negative"):
        load_strategy(path)


def test_a_threshold_no_side_can_reach_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'strategy = Strategy(name="m", symbols=["BTC/USDT"], timeframe="1m", threshold=5,\n'
        '    rules=[Rule("a", ta.close > 1, 2.0, "long"), Rule("b", ta.close < 1, 1.5, "short"),\n'
        '           Rule("f", ta.volume > 0, 1.0)])\n',
    )
    with pytest.raises(StrategyError, match="can never fire") as refused:
        load_strategy(path)
    assert "long open scores at most 3" in str(refused.value)
    assert "short open scores at most 2.5" in str(refused.value)


def test_a_side_that_cannot_reach_the_threshold_is_reported_not_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'strategy = Strategy(name="m", symbols=["BTC/USDT"], timeframe="1m", threshold=2,\n'
        '    rules=[Rule("a", ta.close > 1, 2.0, "long"),\n'
        '           Rule("b", ta.close < 1, 1.0, "short")])\n',
    )
    assert load_strategy(path).unreachable() == ["short open scores at most 1"]


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "raise SystemExit('bye')"])
def test_a_file_that_exits_is_a_strategy_error_naming_it(tmp_path: Path, exit_call: str) -> None:
    path = write(tmp_path, exit_call + "\n")
    with pytest.raises(StrategyError, match=rf"^{path}:\d+: the file calls sys\.exit"):
        load_strategy(path)
