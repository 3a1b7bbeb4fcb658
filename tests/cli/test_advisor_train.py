"""`bfx advisor train|models` through Typer's runner, on a candle file in a temporary home."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from barfinex_cli.advisor.models import load_model
from barfinex_cli.cli import advisor_train
from barfinex_cli.cli.main import BfxGroup
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.detector.engine import VectorEngine, to_payload
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.market.history import load_file, rows_frame
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.store.audit import AuditStore

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"
MEAN_REVERSION = str(STRATEGIES / "mean_reversion_rsi_bb.py")


def root() -> typer.Typer:
    """The two commands on an `advisor` group under a root that turns BfxError into one line."""
    app = typer.Typer(cls=BfxGroup)

    @app.callback()
    def main() -> None:
        """Root."""

    group = typer.Typer()
    group.command("train")(advisor_train.train)
    group.command("models")(advisor_train.models)
    app.add_typer(group, name="advisor")
    return app


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two weeks of synthetic BTC/USDT minutes: the mean-reversion strategy fires ~250 times."""
    path = tmp_path_factory.mktemp("data") / "BTCUSDT-1m.csv"
    frame = rows_frame(generate_candles("BTC/USDT", minutes=20_000))
    frame.rename({"open_ms": "timestamp"}).drop("trades").write_csv(path)
    return path


def home(cli_env: dict[str, str]) -> Path:
    return Path(cli_env["BFX_HOME"])


def test_train_reports_before_and_after_saves_the_model_and_records_the_events(
    runner: CliRunner, csv: Path, cli_env: dict[str, str]
) -> None:
    result = runner.invoke(root(), ["advisor", "train", MEAN_REVERSION, "--data", str(csv)])
    assert result.exit_code == 0, result.output
    for text in ("before calibration", "after calibration", "Brier score", "log loss",
                 "reliability (test split)", "calibrators per regime", "saved "):  # fmt: skip
        assert text in result.stdout
    saved = list((home(cli_env) / "models").glob("mean_reversion_rsi_bb-*.model"))
    assert len(saved) == 1
    bundle = load_model(saved[0])
    assert bundle.strategy == "mean_reversion_rsi_bb" and bundle.window.symbols == ("BTC/USDT",)
    assert bundle.scorer.name == "logistic" and bundle.method == "platt"
    with AuditStore(home(cli_env) / "audit.db", read_only=True) as store:
        types = dict(store.types())
    assert types["advisor.model.trained"] == 1
    assert types["advisor.calibration.trained"] >= 1


def test_train_json_gives_the_path_metrics_and_events(
    runner: CliRunner, csv: Path, cli_env: dict[str, str]
) -> None:
    args = ["advisor", "train", MEAN_REVERSION, "--data", str(csv), "--model", "hgb",
            "--method", "isotonic", "--horizon", "30", "--stop-atr", "1.5", "--json"]  # fmt: skip
    result = runner.invoke(root(), args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert Path(out["path"]).is_file()
    model = out["model"]
    assert model["labels"] == {"horizon": 30, "stop_atr": 1.5, "target_atr": 1.5}
    assert model["method"] == "isotonic"
    assert model["detector_weight"] == 0.4  # `[advisor] detector_weight`, the pipeline's default
    assert 0 <= model["metrics"]["brier_after"] <= 1
    assert {e["type"] for e in out["events"]} == {
        "advisor.model.trained", "advisor.calibration.trained"
    }  # fmt: skip
    assert out["events"][0]["model"] == "hgb" and out["recorded"] is True
    assert load_model(Path(out["path"])).scorer.name == "hgb"


def test_models_lists_saved_models_and_says_which_cannot_load(
    runner: CliRunner, csv: Path, cli_env: dict[str, str]
) -> None:
    empty = runner.invoke(root(), ["advisor", "models"])
    assert empty.exit_code == 0 and "train one with `bfx advisor train" in empty.stdout
    trained = runner.invoke(root(), ["advisor", "train", MEAN_REVERSION, "--data", str(csv),
                                     "--json"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    good = Path(json.loads(trained.stdout)["path"])
    old = good.with_name("old.model")
    old.write_text(good.read_text().replace('"sklearn":"', '"sklearn":"0.24.2-was-'))
    (good.parent / "notes.model").write_text("not a model")
    result = runner.invoke(root(), ["advisor", "models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert set(rows) == {good.stem, "old", "notes"}
    assert rows[good.stem]["loadable"] is True and rows[good.stem]["problem"] is None
    assert rows[good.stem]["strategy"] == "mean_reversion_rsi_bb"
    assert rows[good.stem]["window"]["symbols"] == ["BTC/USDT"]
    assert rows[good.stem]["metrics"]["test_samples"] > 0
    assert rows["old"]["loadable"] is False
    assert "trained with scikit-learn 0.24.2" in rows["old"]["problem"]
    assert (
        rows["notes"]["loadable"] is False and "not a bfx advisor model" in rows["notes"]["problem"]
    )
    table = runner.invoke(root(), ["advisor", "models"])
    assert table.exit_code == 0 and "3 models in" in table.stdout


def test_train_from_the_signals_recorded_in_the_audit_store(
    runner: CliRunner, csv: Path, cli_env: dict[str, str]
) -> None:
    strategy = load_strategy(Path(MEAN_REVERSION))
    frame = load_file(csv, fallback_symbol="BTC/USDT").frame
    records = [r for r in VectorEngine(strategy).evaluate(frame) if r.action == "open"]
    (home(cli_env)).mkdir(parents=True, exist_ok=True)
    with AuditStore(home(cli_env) / "audit.db") as store:
        store.append(make_event(to_payload(r, "d1", "binance"), source="detector/d1")
                     for r in records)  # fmt: skip
    args = ["advisor", "train", MEAN_REVERSION, "--data", str(csv), "--from-audit",
            "--detector-weight", "0.25", "--json"]  # fmt: skip
    result = runner.invoke(root(), args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"]["detector_weight"] == 0.25
    left_out = sum(out["left_out"].values()) - out["left_out"]["purged"]
    assert out["model"]["window"]["signals"] + left_out == len(records)


def test_from_audit_without_an_audit_store_names_the_fix(runner: CliRunner, csv: Path) -> None:
    result = runner.invoke(root(), ["advisor", "train", MEAN_REVERSION, "--data", str(csv),
                                    "--from-audit"])  # fmt: skip
    assert result.exit_code == 1
    assert "no audit store" in result.output and "without --from-audit" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--method", "sigmoid"], 2, "--method 'sigmoid': choose platt or isotonic"),
        (["--model", "forest"], 2, "--model 'forest': choose logistic or hgb"),
        (["--horizon", "0"], 2, "--horizon"),
    ],
)
def test_bad_options_are_one_line_with_exit_2(
    runner: CliRunner, csv: Path, args: list[str], code: int, message: str
) -> None:
    result = runner.invoke(root(), ["advisor", "train", MEAN_REVERSION, "--data", str(csv), *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_too_short_a_history_says_what_to_do(runner: CliRunner, tmp_path: Path) -> None:
    short = tmp_path / "BTCUSDT-1m.csv"
    frame = rows_frame(generate_candles("BTC/USDT", minutes=1_500))
    frame.rename({"open_ms": "timestamp"}).drop("trades").write_csv(short)
    result = runner.invoke(root(), ["advisor", "train", MEAN_REVERSION, "--data", str(short)])
    assert result.exit_code == 2
    assert "too few to train on" in result.output and "longer history" in result.output


def test_no_candles_named_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(root(), ["advisor", "train", MEAN_REVERSION])
    assert result.exit_code == 2 and "--data FILE or --exchange NAME" in result.output


def test_the_command_module_loads_neither_sklearn_nor_polars() -> None:
    probe = (
        "import sys, barfinex_cli.cli.advisor_train\n"
        "print(sorted(m for m in ('sklearn', 'polars', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
