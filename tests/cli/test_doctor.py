"""`bfx doctor` and `bfx config show`: checks, fixes, masking and config errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from cli.conftest import BfxRun


def test_doctor_reports_every_check_ok_with_redis_up(runner: CliRunner) -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    names = {c["name"] for c in report["checks"]}
    assert {"python", "redis", "data dir", "ccxt", "polars"} <= names


def test_doctor_with_dead_redis_prints_the_fix_and_exits_3_without_traceback(bfx: BfxRun) -> None:
    result = bfx("--redis-url", "redis://127.0.0.1:1/0", "doctor")
    assert result.returncode == 3
    assert "Redis not reachable at redis://127.0.0.1:1/0" in result.stderr
    assert "--bus memory" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bus_command_with_dead_redis_exits_3_with_one_line(bfx: BfxRun) -> None:
    result = bfx("--redis-url", "redis://127.0.0.1:1/0", "events", "tail", "--count", "1")
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: Redis not reachable")


def test_config_show_masks_secrets(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "show", "--json"], env={"BFX_TOKEN": "s3cret-value"})
    assert result.exit_code == 0
    shown = json.loads(result.output)["settings"]
    assert shown["token"] == "********"
    assert "s3cret-value" not in result.output


def test_config_layers_file_then_environment_then_flags(tmp_path: Path, runner: CliRunner) -> None:
    config = tmp_path / "bfx.toml"
    config.write_text('namespace = "from-file"\nbus_maxlen = 5000\nlog_level = "DEBUG"\n')
    env = {"BFX_NAMESPACE": "", "BFX_BUS_MAXLEN": "7000"}
    result = runner.invoke(
        app,
        ["--config", str(config), "--namespace", "from-flag", "config", "show", "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["settings"]
    assert shown["namespace"] == "from-flag"
    assert shown["bus_maxlen"] == 7000
    assert shown["log_level"] == "DEBUG"


def test_bad_config_file_names_file_key_and_reason(tmp_path: Path, bfx: BfxRun) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('bus_maxlen = "lots"\n')
    result = bfx("--config", str(config), "config", "show")
    assert result.returncode == 1
    assert str(config) in result.stderr
    assert "'bus_maxlen'" in result.stderr
    assert "integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_in_config_lists_the_known_keys(tmp_path: Path, bfx: BfxRun) -> None:
    config = tmp_path / "bfx.toml"
    config.write_text('redis_ur = "redis://x"\n')
    result = bfx("config", "show")
    assert result.returncode == 1
    assert "'redis_ur'" in result.stderr and "redis_url" in result.stderr


def test_unreadable_toml_is_a_config_error(tmp_path: Path, bfx: BfxRun) -> None:
    (tmp_path / "bfx.toml").write_text("namespace = \n")
    result = bfx("config", "show")
    assert result.returncode == 1
    assert "cannot read it as TOML" in result.stderr
