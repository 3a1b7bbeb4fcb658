"""Walk-forward: each fold's advisor model is trained on that fold's past only."""

from __future__ import annotations

from pathlib import Path

import pytest

from barfinex_cli.advisor.models import load_model
from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.backtest.engine import PipelineSpec
from barfinex_cli.kernel.backtest.walkforward import walk_forward
from barfinex_cli.runtime.settings import load_settings
from strategy_files import momentum

BUSY = momentum("busy", cooldown=1)


@pytest.mark.slow
def test_each_fold_trains_on_its_past_only_and_backtests_its_own_window(tmp_path: Path) -> None:
    strategy = tmp_path / "busy.py"
    strategy.write_text(BUSY)
    settings = load_settings(home=tmp_path / "home", token="t0ken", log_level="ERROR")
    spec = PipelineSpec(strategies=(strategy,), symbols=("BTC/USDT",), days=1.0, history=1340)
    done = walk_forward(settings, spec, folds=2)

    first, second = done.folds
    assert first.end_ms <= second.start_ms  # a fold ends where the next begins
    for fold in done.folds:
        assert fold.model is not None, fold.untrained
        assert fold.trained_until_ms is not None and fold.trained_until_ms <= fold.start_ms
        bundle = load_model(fold.model)
        assert bundle.window.end_ms <= fold.start_ms  # nothing of the fold was seen
        assert fold.result.start_ms > fold.start_ms and fold.result.end_ms <= fold.end_ms
        assert fold.result.run_id.endswith(f"-f{fold.number}")
    # the later fold has more past to learn from
    assert second.samples > first.samples
    assert load_model(second.model).window.end_ms > load_model(first.model).window.end_ms  # type: ignore[arg-type]
    assert done.combined.trades == sum(len(f.result.trades) for f in done.folds)


def test_more_folds_than_candles_is_a_usage_error(tmp_path: Path) -> None:
    strategy = tmp_path / "busy.py"
    strategy.write_text(BUSY)
    settings = load_settings(home=tmp_path / "home", token="t0ken")
    spec = PipelineSpec(strategies=(strategy,), days=0.1, history=140)
    with pytest.raises(UsageError, match="--folds 50: the window has only 4 candles"):
        walk_forward(settings, spec, folds=50)
