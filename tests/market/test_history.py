"""Candle loading: files and the market store give the same frame, and misses name the fix."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from barfinex_cli.errors import BfxError, NotFound, UsageError
from barfinex_cli.market.history import load_file, load_store, read_flow_file, rows_frame
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

START = 1_704_067_200_000  # 2024-01-01T00:00Z
CANDLES = generate_candles("BTC/USDT", START, 30)
PRICES = ("open_ms", "open", "high", "low", "close", "volume")


def _ohlcv_csv(path: Path, rows: list[CandleRow], extra: tuple[str, ...] = ()) -> Path:
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{c.open_ms},{c.open},{c.high},{c.low},{c.close},{c.volume}" for c in rows]
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


def _store(path: Path, key: SeriesKey, rows: list[CandleRow]) -> Path:
    with MarketStore(path) as store:
        store.upsert_candles(key, rows)
    return path


def test_a_plain_file_is_labelled_by_its_name_and_loses_the_flow_columns_it_lacks(
    tmp_path: Path,
) -> None:
    loaded = load_file(_ohlcv_csv(tmp_path / "ETHUSDT-1m.csv", CANDLES), fallback_symbol="X/Y")
    frame = loaded.frame
    assert "buy_volume" not in frame.columns and "sell_volume" not in frame.columns
    assert frame["symbol"].unique().to_list() == ["ETH/USDT"]
    assert frame.select(PRICES).rows() == [tuple(c[:6]) for c in CANDLES]
    assert (loaded.rows_read, loaded.left_out) == (30, ())


def test_the_symbol_option_wins_over_the_file_name_and_the_fallback(tmp_path: Path) -> None:
    path = _ohlcv_csv(tmp_path / "ETHUSDT-1m.csv", CANDLES)
    named = load_file(path, symbol="SOL/USDT", fallback_symbol="X/Y")
    assert named.frame["symbol"].unique().to_list() == ["SOL/USDT"]
    anonymous = load_file(
        _ohlcv_csv(tmp_path / "candles.csv", CANDLES), timeframe="1m", fallback_symbol="X/Y"
    )
    assert anonymous.frame["symbol"].unique().to_list() == ["X/Y"]


def test_rows_left_out_are_returned_for_the_caller_to_report(tmp_path: Path) -> None:
    bad = f"{CANDLES[-1].open_ms + 60_000},10,9,11,10,1"  # high below low
    path = _ohlcv_csv(tmp_path / "BTCUSDT-1m.csv", CANDLES, (bad,))
    loaded = load_file(path, fallback_symbol="X/Y")
    assert loaded.frame.height == 30 and loaded.rows_read == 31
    assert loaded.left_out == (f"{path}:32: high 9.0 is below low 11.0",)


def test_a_file_with_no_valid_candle_or_no_file_at_all_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-1m.csv"
    path.write_text(f"{START},x,2,3,4,5\n{START + 60_000},x,2,3,4,5\n")
    with pytest.raises(BfxError, match="2 rows read, none valid"):  # the importer's or ours
        load_file(path, fallback_symbol="X/Y")
    with pytest.raises(NotFound, match=r"missing\.csv: no such file"):
        load_file(tmp_path / "missing.csv", fallback_symbol="X/Y")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_order_flow_file_is_read_as_it_is_with_open_ms_from_its_timestamp(
    tmp_path: Path, suffix: str
) -> None:
    flow = pl.DataFrame(
        {
            "timestamp": [c.open_ms for c in CANDLES],
            "open": [c.open for c in CANDLES],
            "high": [c.high for c in CANDLES],
            "low": [c.low for c in CANDLES],
            "close": [c.close for c in CANDLES],
            "volume": [c.volume for c in CANDLES],
            "buy_volume": [c.volume * 0.25 for c in CANDLES],
            "sell_volume": [c.volume * 0.75 for c in CANDLES],
        }
    )
    path = tmp_path / f"flow{suffix}"
    if suffix == ".csv":
        flow.write_csv(path)
    else:
        flow.with_columns(pl.from_epoch("timestamp", time_unit="ms")).write_parquet(path)
    loaded = load_file(path, fallback_symbol="BTC/USDT")
    assert loaded.frame["open_ms"].to_list() == [c.open_ms for c in CANDLES]
    assert loaded.frame["buy_volume"].to_list() == flow["buy_volume"].to_list()
    assert loaded.frame["symbol"].unique().to_list() == ["BTC/USDT"]


def test_a_file_without_both_flow_columns_is_not_an_order_flow_file(tmp_path: Path) -> None:
    path = tmp_path / "half.csv"
    pl.DataFrame({"timestamp": [START], "buy_volume": [1.0]}).write_csv(path)
    assert read_flow_file(path) is None
    assert read_flow_file(tmp_path / "candles.json") is None  # never opened: not CSV/Parquet


def test_flow_columns_stay_when_any_row_knows_them() -> None:
    rows = [CANDLES[0]._replace(buy_volume=1.0, sell_volume=2.0), CANDLES[1]]
    assert {"buy_volume", "sell_volume"} <= set(rows_frame(rows).columns)
    assert "buy_volume" not in rows_frame(CANDLES).columns


def test_the_store_gives_the_same_candles_as_the_file(tmp_path: Path) -> None:
    key = SeriesKey("binance", "BTC/USDT", "1m")
    db = _store(tmp_path / "market.db", key, CANDLES)
    from_store = load_store(db, "binance", ["BTC/USDT"], "1m")
    from_file = load_file(_ohlcv_csv(tmp_path / "BTCUSDT-1m.csv", CANDLES), fallback_symbol="X/Y")
    assert from_store.select(*PRICES, "symbol").equals(from_file.frame.select(*PRICES, "symbol"))


def test_several_symbols_are_one_frame_in_the_order_asked(tmp_path: Path) -> None:
    eth = generate_candles("ETH/USDT", START, 10)
    db = _store(tmp_path / "market.db", SeriesKey("binance", "BTC/USDT", "1m"), CANDLES)
    _store(db, SeriesKey("binance", "ETH/USDT", "1m"), eth)
    frame = load_store(db, "binance", ["ETH/USDT", "BTC/USDT"], "1m")
    assert frame["symbol"].to_list() == ["ETH/USDT"] * 10 + ["BTC/USDT"] * 30


def test_a_missing_series_names_what_the_store_holds(tmp_path: Path) -> None:
    db = _store(tmp_path / "market.db", SeriesKey("binance", "BTC/USDT", "1m"), CANDLES)
    with pytest.raises(NotFound) as missing:
        load_store(db, "kraken", ["BTC/USDT"], "1m")
    assert str(missing.value) == (
        f"no 1m candles of BTC/USDT on kraken in {db}; the store holds: binance BTC/USDT 1m"
    )
    with pytest.raises(NotFound, match="no 5m candles"):
        load_store(db, "binance", ["BTC/USDT"], "5m")


def test_no_store_is_not_found_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "home" / "market.db"
    with pytest.raises(NotFound, match="import some with `bfx data import FILE`"):
        load_store(db, "binance", ["BTC/USDT"], "1m")
    assert not db.exists()
    with pytest.raises(UsageError, match="no symbols"):
        load_store(db, "binance", [], "1m")
