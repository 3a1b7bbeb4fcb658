"""`bfx config show`: the effective settings, with every secret masked, URL passwords included."""

from __future__ import annotations

import json
from pathlib import Path

from cli.conftest import BfxRun


def test_a_password_in_the_redis_url_is_masked_in_the_listing(bfx: BfxRun) -> None:
    url = "redis://:hunter2@127.0.0.1:6379/0"
    shown = bfx("--redis-url", url, "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["settings"]["redis_url"] == "redis://:****@127.0.0.1:6379/0"
    table = bfx("--redis-url", url, "config", "show")
    assert "hunter2" not in table.stdout + table.stderr


def test_a_redis_url_that_is_not_one_is_refused_naming_the_option(bfx: BfxRun) -> None:
    result = bfx("--redis-url", "notaurl", "config", "show")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --redis-url (BFX_REDIS_URL): 'notaurl' is not a")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_redis_url_in_the_settings_file_is_a_config_error_naming_the_file(
    bfx: BfxRun, cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "bfx.toml"
    config.write_text('redis_url = "http://:secret@host:6379"\n')
    del cli_env["BFX_REDIS_URL"]
    result = bfx("--config", str(config), "config", "show")
    assert result.returncode == 1, result.stderr
    assert f"redis_url in {config}" in result.stderr and "secret" not in result.stderr
