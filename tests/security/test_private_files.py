"""The data directory and every store file in it are created owner-only (0700 / 0600)."""

from __future__ import annotations

import stat
from pathlib import Path

from barfinex_cli.runtime.datadir import writable
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.broker import BrokerStore
from barfinex_cli.store.inspector import InspectorStore
from barfinex_cli.store.market import MarketStore
from barfinex_cli.store.private import private_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_and_its_stores_are_owner_only(tmp_path: Path) -> None:
    home = writable(tmp_path / "fresh" / "home")
    assert _mode(home) == 0o700
    MarketStore(home / "market.db").conn.close()
    with AuditStore(home / "audit.db"):
        pass
    BrokerStore(home / "paper.db").db.close()
    InspectorStore(home / "inspector.db").db.close()
    made = sorted(p.name for p in home.iterdir())
    assert {"market.db", "audit.db", "paper.db", "inspector.db"} <= set(made)
    loose = {p.name: oct(_mode(p)) for p in home.iterdir() if _mode(p) & 0o077}
    assert loose == {}, loose  # the -wal and -shm files copy the main file's mode


def test_an_existing_file_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared.db"
    shared.touch(mode=0o640)
    shared.chmod(0o640)
    private_file(shared)
    assert _mode(shared) == 0o640
    assert _mode(private_file(tmp_path / "new" / "x.db")) == 0o600
    assert _mode(tmp_path / "new") == 0o700


def test_a_config_file_holding_a_secret_must_be_owner_only(tmp_path: Path) -> None:
    import pytest

    from barfinex_cli.errors import ConfigError
    from barfinex_cli.runtime.settings import load_settings

    config = tmp_path / "bfx.toml"
    for text, key in (
        ('token = "file-token"\n', "token"),
        ('[advisor]\nllm_api_key = "sk-file"\n', "advisor.llm_api_key"),
        ('[webhooks]\ntargets = [{url = "http://127.0.0.1:9", secret = "s"}]\n', "targets"),
    ):
        config.write_text(text)
        config.chmod(0o644)
        with pytest.raises(ConfigError, match=rf"holds a secret \(.*{key}.*chmod 600"):
            load_settings(config, home=tmp_path)
        config.chmod(0o600)
        load_settings(config, home=tmp_path)  # owner-only: the file may hold it
    config.write_text('namespace = "x"\n')
    config.chmod(0o644)
    assert load_settings(config, home=tmp_path).namespace == "x"  # no secret: any mode
