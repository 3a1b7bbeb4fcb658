"""The columnar copy of a candle series: served only while it holds what the store holds."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from barfinex_cli.market.candle_cache import SCHEMA, Loaded, cache_dir, load_series
from barfinex_cli.market.history import load_store, rows_frame
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.store.market import SCHEMA as STORE_SCHEMA
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

START = 1_704_067_200_000  # 2024-01-01T00:00Z
KEY = SeriesKey("binance", "BTC/USDT", "1m")
CANDLES = generate_candles("BTC/USDT", START, 500)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "market.db"
    with MarketStore(path) as store:
        store.upsert_candles(KEY, CANDLES)
    return path


def _load(db: Path, key: SeriesKey = KEY) -> Loaded:
    with MarketStore(db, read_only=True) as store:
        return load_series(store, key)


def _sqlite(db: Path, key: SeriesKey = KEY) -> pl.DataFrame:
    with MarketStore(db, read_only=True) as store:
        return pl.DataFrame(store.candle_tuples(key), schema=SCHEMA, orient="row")


def _copies(db: Path) -> list[Path]:
    return sorted(cache_dir(db).rglob("*.parquet"))


def test_the_copy_gives_the_frame_the_sqlite_read_gives(db: Path) -> None:
    built = _load(db)
    hit = _load(db)
    assert (built.how, hit.how) == ("built", "hit")
    assert built.frame.equals(_sqlite(db)) and hit.frame.equals(_sqlite(db))
    assert hit.frame.height == 500 and hit.frame.schema == pl.Schema(SCHEMA)
    [copy] = _copies(db)
    assert copy.parent == cache_dir(db) / "binance" / "BTC%2FUSDT" / "1m"
    # load_store's frame is the one it made from rows before the copy existed
    expected = rows_frame(CANDLES).with_columns(pl.lit("BTC/USDT").alias("symbol"))
    assert load_store(db, "binance", ["BTC/USDT"], "1m").equals(expected)


def test_appended_candles_extend_the_copy(db: Path) -> None:
    _load(db)
    more = generate_candles("BTC/USDT", START + 500 * 60_000, 20)
    with MarketStore(db) as store:
        store.upsert_candles(KEY, more)
    appended = _load(db)
    assert appended.how == "appended" and appended.frame.height == 520
    assert appended.frame.equals(_sqlite(db))
    assert len(_copies(db)) == 1 and _load(db).how == "hit"


@pytest.mark.parametrize("change", ["replace", "delete", "raw update"])
def test_a_changed_candle_with_the_same_count_and_last_time_rebuilds_the_copy(
    db: Path, change: str
) -> None:
    _load(db)
    middle = CANDLES[250]
    with MarketStore(db) as store:
        if change == "replace":
            store.upsert_candles(KEY, [middle._replace(close=middle.close + 1, high=1e9)])
        elif change == "delete":  # then put it back: same rows, same first and last
            store.delete_candles(KEY, [middle.open_ms])
            store.upsert_candles(KEY, [middle._replace(volume=middle.volume + 1)])
        else:  # a writer that is not bfx: the triggers count it all the same
            raw = sqlite3.connect(db)
            raw.execute("UPDATE candles SET low = 1 WHERE open_ms = ?", (middle.open_ms,))
            raw.commit()
            raw.close()
    rebuilt = _load(db)
    assert rebuilt.how == "built" and rebuilt.frame.height == 500
    assert rebuilt.frame.equals(_sqlite(db))
    assert rebuilt.frame.row(250) != _copy_frame_of(CANDLES).row(250)


def _copy_frame_of(rows: list[CandleRow]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "not parquet"])
def test_a_damaged_copy_is_never_served_and_is_rebuilt(db: Path, damage: str) -> None:
    _load(db)
    [copy] = _copies(db)
    data = bytearray(copy.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped byte":
        data[len(data) // 3] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:  # bytes whose CRC the name carries: only the parquet read can refuse them
        import zlib

        data = bytearray(b"PAR1 not a parquet file PAR1")
        head, _, _ = copy.name.rpartition(".")
        copy.unlink()
        copy = copy.with_name(f"{head.rpartition('.')[0]}.{zlib.crc32(data):08x}.parquet")
    copy.write_bytes(data)
    rebuilt = _load(db)
    assert rebuilt.how == "built" and rebuilt.frame.equals(_sqlite(db))
    assert len(_copies(db)) == 1 and _load(db).how == "hit"


def test_a_store_made_again_never_gets_the_old_stores_copy(db: Path) -> None:
    _load(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    changed = [c._replace(close=c.close * 2, high=c.high * 2) for c in CANDLES]
    with MarketStore(db) as store:  # same rows, same times, same generation: another store id
        store.upsert_candles(KEY, changed)
    fresh = _load(db)
    assert fresh.how == "built" and fresh.frame.equals(_copy_frame_of(changed))


@pytest.mark.parametrize("appended", [20, 30])
def test_an_older_backup_restored_and_appended_to_never_gets_the_copy(
    db: Path, tmp_path: Path, appended: int
) -> None:
    backup = tmp_path / "backup.db"
    shutil.copyfile(db, backup)  # 500 candles; the store is closed, so all in the file
    with MarketStore(db) as store:
        store.upsert_candles(KEY, generate_candles("BTC/USDT", START + 500 * 60_000, 20))
    assert _load(db).how == "built"  # the copy: 520 candles
    shutil.copyfile(backup, db)
    other = generate_candles("ETH/USDT", START + 500 * 60_000, appended)  # other prices
    with MarketStore(db) as store:  # same store id, no rewrite: 20 give the copy's very counters
        store.upsert_candles(KEY, other)
    restored = _load(db)
    assert restored.how == "built" and restored.frame.equals(_sqlite(db))


def test_a_store_without_generations_is_read_from_sqlite_and_not_copied(tmp_path: Path) -> None:
    db = tmp_path / "market.db"
    old = sqlite3.connect(db)  # a market.db as bfx made it before the cache
    old.executescript(STORE_SCHEMA)
    old.executemany(
        "INSERT INTO candles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [(*KEY, *c) for c in CANDLES]
    )
    old.commit()
    old.close()
    assert [_load(db).how, _load(db).how] == ["uncached", "uncached"]
    assert _load(db).frame.equals(_copy_frame_of(CANDLES)) and not cache_dir(db).exists()
    MarketStore(db).close()  # bfx opening it for writing adds the generations
    assert [_load(db).how, _load(db).how] == ["built", "hit"]


def test_a_read_sees_the_store_as_of_its_state_while_a_writer_appends(db: Path) -> None:
    with MarketStore(db, read_only=True) as reader, MarketStore(db) as writer:
        with reader.snapshot():
            state = reader.series_state(KEY)
            writer.upsert_candles(KEY, generate_candles("BTC/USDT", START + 500 * 60_000, 5))
            rows = reader.candle_tuples(KEY)
        assert state is not None and state.last_ms == rows[-1][0] == CANDLES[-1].open_ms
        assert len(rows) == 500
        after = reader.series_state(KEY)
        assert after is not None and after.generation == state.generation + 5
        assert after.rewrites == state.rewrites  # appends only


WRITER = """
import sys
from pathlib import Path
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.store.market import MarketStore, SeriesKey
rows = generate_candles("BTC/USDT", int(sys.argv[2]), 3000)
stop = Path(sys.argv[3])
with MarketStore(Path(sys.argv[1])) as store:
    print("ready", flush=True)
    for row in rows:  # one transaction each, as a live provider writes, until told to stop
        if stop.exists():
            break
        store.upsert_candles(SeriesKey("binance", "BTC/USDT", "1m"), [row])
"""


def _heights(seen: list[tuple[str, int]]) -> int:
    return len({height for _, height in seen})


def test_loads_racing_a_writing_process_see_only_whole_prefixes_of_the_series(
    db: Path, tmp_path: Path
) -> None:
    more_from = START + 500 * 60_000
    expected = _copy_frame_of(CANDLES + generate_candles("BTC/USDT", more_from, 3000))
    stop = tmp_path / "stop"
    seen: list[tuple[str, int]] = []
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(more_from), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        while _heights(seen) < 5 and len(seen) < 1000 and writer.poll() is None:
            loaded = _load(db)
            height = loaded.frame.height
            assert loaded.frame.equals(expected.head(height)), (loaded.how, height)
            assert not seen or height >= seen[-1][1]
            seen.append((loaded.how, height))
        stop.touch()
    assert writer.returncode == 0
    final = _load(db)
    assert final.frame.equals(_sqlite(db)) and final.frame.height >= seen[-1][1]
    assert "appended" in {how for how, _ in seen}
    assert _heights(seen) == 5  # the loads landed between the writes


def test_an_empty_series_is_empty_and_copies_nothing(db: Path) -> None:
    empty = _load(db, SeriesKey("binance", "ETH/USDT", "1m"))
    assert empty.frame.is_empty() and empty.how == "uncached"
    assert not cache_dir(db).exists()


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a directory read-only")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]


@pytest.fixture
def read_only(db: Path) -> Iterator[Path]:
    db.parent.chmod(0o500)
    try:
        yield db
    finally:
        db.parent.chmod(0o700)


LOAD = """
import json, sys
from pathlib import Path
from barfinex_cli.market.candle_cache import load_series
from barfinex_cli.store.market import MarketStore, SeriesKey
with MarketStore(Path(sys.argv[1]), read_only=True) as store:
    loaded = load_series(store, SeriesKey("binance", "BTC/USDT", "1m"))
print(json.dumps([loaded.how, loaded.frame.height]))
"""


def _load_unprivileged(db: Path) -> list[object]:
    done = subprocess.run(
        [*_unprivileged(), sys.executable, "-c", LOAD, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_a_read_only_data_dir_loads_without_writing_a_copy(read_only: Path) -> None:
    before = sorted(p.name for p in read_only.parent.iterdir())
    assert _load_unprivileged(read_only) == ["built", 500]
    assert sorted(p.name for p in read_only.parent.iterdir()) == before


def test_a_read_only_data_dir_still_serves_a_current_copy(db: Path) -> None:
    _load(db)
    db.parent.chmod(0o500)
    try:
        assert _load_unprivileged(db) == ["hit", 500]
    finally:
        db.parent.chmod(0o700)
