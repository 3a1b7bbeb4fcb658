"""`bfx optimize` through Typer's runner and as a real process: tables, JSON, resume, mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.kernel.optimize.storage import journal_prefix, open_storage
from cli.conftest import BfxRun
from conftest import REDIS_URL

SMA = str(Path(__file__).resolve().parents[2] / "strategies" / "sma_cross.py")
TREND = str(Path(__file__).resolve().parents[2] / "strategies" / "trend_ema_adx.py")
GRID = ["-p", "fast=5:15:5", "-p", "slow=30:40:10", "--sampler", "grid"]


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    n = 1_200
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.r_[close[0], close[:-1]]
    path = tmp_path / "BTCUSDT-1m.csv"
    pl.DataFrame({
        "timestamp": 1_704_067_200_000 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999,
        "close": close,
        "volume": np.ones(n),
    }).write_csv(path)  # fmt: skip
    return path


def test_json_reports_the_best_trial_in_sample_and_out_of_sample(
    runner: CliRunner, csv: Path
) -> None:
    result = runner.invoke(app, ["optimize", SMA, "--data", str(csv), *GRID, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["trials_run"] == 6
    assert report["sampler"] == "grid" and report["metric"] == "sharpe"
    assert set(report["best"]["params"]) == {"fast", "slow"}
    assert report["in_sample"]["sharpe"] == report["best"]["value"]
    assert report["out_of_sample"]["trades"] >= 0
    [final] = report["folds"]
    assert final["label"] == "final" and final["search"]["end_ms"] == final["test"]["start_ms"]
    assert len(final["top"]) == 6
    assert report["storage"].endswith("optuna.db")
    again = runner.invoke(app, ["optimize", SMA, "--data", str(csv), *GRID, "--json"])
    resumed = json.loads(again.stdout)
    assert (resumed["study"], resumed["trials_run"]) == (report["study"], 0)
    assert resumed["best"] == report["best"]


def test_the_tables_rank_trials_and_set_in_sample_beside_held_out(
    runner: CliRunner, csv: Path
) -> None:
    args = ["optimize", SMA, "--data", str(csv), *GRID, "--walk-forward", "2", "--study", "t"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "top trials of t by sharpe (highest first)" in result.stdout
    assert "walk-forward" in result.stdout and "wf2/2" in result.stdout
    assert "in-sample" in result.stdout and "out-of-sample" in result.stdout
    assert "18 trials run" in result.stderr  # 6 per fold, 2 folds and the final search


def test_max_drawdown_is_minimised(runner: CliRunner, csv: Path) -> None:
    args = ["optimize", SMA, "--data", str(csv), *GRID, "--metric", "max_drawdown", "--json"]
    report = json.loads(runner.invoke(app, args).stdout)
    values = [row["value"] for row in report["folds"][0]["top"]]
    assert report["direction"] == "minimize" and values == sorted(values)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "speed=1:5"], "--param speed: unknown parameter; the strategy declares fast"),
        (["-p", "fast=30:5"], "low 30 is above high 5; write fast=5:30"),
        (["-p", "fast=5:30:0"], "the step must be > 0"),
        (["-p", "fast=5-30"], "'5-30' is not an int"),
        ([], "Missing option '--param'"),
        (["-p", "fast=5:9", "--holdout", "1.5"], "--holdout 1.5: give a share between 0 and 1"),
        (["-p", "fast=5:9", "--storage", "nosuch://x"], "--storage nosuch://x:"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(
    runner: CliRunner, csv: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["optimize", SMA, "--data", str(csv), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_strategy_without_build_says_how_to_declare_parameters(
    runner: CliRunner, csv: Path
) -> None:
    result = runner.invoke(app, ["optimize", TREND, "--data", str(csv), "-p", "fast=5:9"])
    assert result.exit_code == 2
    assert "the strategy declares no parameters; define def build(" in result.stderr


def test_two_jobs_as_a_real_process(bfx: BfxRun, csv: Path) -> None:
    search = ["-p", "fast=5:20", "-p", "slow=25:60", "--sampler", "random", "--trials", "4"]
    done = bfx("optimize", SMA, "--data", str(csv), *search, "--jobs", "2", "--seed", "7", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["jobs"], report["trials_run"]) == (2, 4)
    assert report["folds"][0]["trials_completed"] == 4
    assert "Traceback" not in done.stderr


@pytest.mark.redis
def test_two_machines_share_one_study_on_redis(
    cli_env: dict[str, str], csv: Path, tmp_path: Path, namespace: str
) -> None:
    """Two `bfx optimize` processes with their own data dirs add their trials to one study."""
    import redis

    search = ["-p", "fast=5:20", "-p", "slow=25:60", "--sampler", "random", "--trials", "3"]
    args = [sys.executable, "-m", "barfinex_cli", "optimize", SMA, "--data", str(csv), *search,
            "--storage", REDIS_URL, "--study", "shared", "--json"]  # fmt: skip
    hosts = []
    for name in ("a", "b"):
        env = {**cli_env, "BFX_HOME": str(tmp_path / name)}
        hosts.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    client = redis.Redis.from_url(REDIS_URL)
    try:
        reports = []
        for host in hosts:
            out, err = host.communicate(timeout=120)
            assert host.returncode == 0, err
            reports.append(json.loads(out))
        assert [r["trials_run"] for r in reports] == [3, 3]
        assert max(r["folds"][0]["trials_completed"] for r in reports) == 6  # the last sees all
        assert not (tmp_path / "a" / "optuna.db").exists()
        study = optuna.load_study(study_name="shared", storage=open_storage(REDIS_URL, namespace))
        assert [t.number for t in study.trials] == list(range(6))
        assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    finally:
        for host in hosts:
            if host.poll() is None:
                host.kill()
        keys = list(client.scan_iter(f"{journal_prefix(namespace)}:*"))
        if keys:
            client.delete(*keys)
        client.close()
