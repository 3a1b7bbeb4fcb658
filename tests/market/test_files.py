"""Importers: every layout recognised, bad rows reported as file:line, and export reads back."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from barfinex_cli.errors import BfxError, NotFound, UsageError
from barfinex_cli.market import candles
from barfinex_cli.market import files as importers
from barfinex_cli.market.files import ColumnMap, import_file, read_file
from barfinex_cli.market.synthetic import generate_candles, generate_trades
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

START = 1_704_067_200_000  # 2024-01-01T00:00Z
CANDLES = generate_candles("BTC/USDT", START, 20)
TRADES = generate_trades(CANDLES[:2], "BTC/USDT")


def _plain(rows: list[CandleRow]) -> list[CandleRow]:
    return [c._replace(trades=None) for c in rows]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _ohlcv(c: CandleRow, ts: object = None) -> str:
    return f"{c.open_ms if ts is None else ts},{c.open},{c.high},{c.low},{c.close},{c.volume}"


def _kline(c: CandleRow, scale: int = 1) -> str:
    close_time = (c.open_ms + 59_999) * scale
    prices = f"{c.open},{c.high},{c.low},{c.close},{c.volume}"
    return f"{c.open_ms * scale},{prices},{close_time},1.0,{c.trades},0.5,0.5,0"


def test_freqtrade_json_arrays_are_read(tmp_path: Path) -> None:
    path = tmp_path / "BTC_USDT-1m.json"
    path.write_text(
        json.dumps([[c.open_ms, c.open, c.high, c.low, c.close, c.volume] for c in CANDLES])
    )
    parsed = read_file(path)
    assert (parsed.layout, parsed.kind, parsed.symbol, parsed.timeframe) == (
        "ohlcv-json", "candles", "BTC/USDT", "1m",
    )  # fmt: skip
    assert parsed.candles == _plain(CANDLES) and parsed.rejected == []


def test_a_ccxt_csv_without_header_is_read(tmp_path: Path) -> None:
    parsed = read_file(_write(tmp_path / "ETHUSDT-1m.csv", [_ohlcv(c) for c in CANDLES]))
    assert (parsed.layout, parsed.symbol) == ("ohlcv-csv", "ETH/USDT")
    assert parsed.candles == _plain(CANDLES)


@pytest.mark.parametrize("scale", [1, 1000], ids=["ms", "us"])
def test_binance_kline_dumps_are_read_in_ms_and_us(tmp_path: Path, scale: int) -> None:
    parsed = read_file(
        _write(tmp_path / "BTCUSDT-1m-2024-01.csv", [_kline(c, scale) for c in CANDLES])
    )
    assert (parsed.layout, parsed.symbol, parsed.timeframe) == ("binance-klines", "BTC/USDT", "1m")
    assert parsed.candles == CANDLES  # trade counts come from column 8


def test_binance_klines_with_their_header_are_read(tmp_path: Path) -> None:
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore"
    )
    parsed = read_file(_write(tmp_path / "BTCUSDT-1m.csv", [header, *(_kline(c) for c in CANDLES)]))
    assert parsed.layout == "binance-klines"
    assert parsed.candles == CANDLES


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


STAMPS: dict[str, Callable[[int], str]] = {
    "ms": str,
    "s": lambda ms: str(ms // 1000),
    "s-float": lambda ms: f"{ms / 1000:.1f}",
    "iso-z": lambda ms: _at(ms).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso-space": lambda ms: _at(ms).strftime("%Y-%m-%d %H:%M:%S"),
    "iso-offset": lambda ms: _at(ms).astimezone(timezone(timedelta(hours=2))).isoformat(),
}


@pytest.mark.parametrize("stamp", STAMPS.values(), ids=STAMPS.keys())
def test_a_named_header_reads_every_timestamp_form(
    tmp_path: Path, stamp: Callable[[int], str]
) -> None:
    lines = [
        "timestamp,open,high,low,close,volume",
        *(_ohlcv(c, stamp(c.open_ms)) for c in CANDLES),
    ]
    parsed = read_file(_write(tmp_path / "prices.csv", lines), symbol="BTC/USDT")
    assert parsed.layout == "candles-header"
    assert parsed.rejected == []
    assert parsed.candles == _plain(CANDLES)


def test_a_trade_csv_with_header_is_read_and_numbered(tmp_path: Path) -> None:
    lines = [
        "timestamp,price,amount,side",
        *(f"{t.time_ms},{t.price},{t.amount},{t.side}" for t in TRADES),
    ]
    parsed = read_file(_write(tmp_path / "SOLUSDT-trades.csv", lines))
    assert (parsed.layout, parsed.kind, parsed.symbol) == ("trades-header", "trades", "SOL/USDT")
    assert [(t.time_ms, t.price, t.amount, t.side) for t in parsed.trades] == [
        (t.time_ms, t.price, t.amount, t.side) for t in TRADES
    ]
    assert len({t.trade_id for t in parsed.trades}) == len(TRADES)


def test_binance_aggtrades_and_trades_dumps_are_read(tmp_path: Path) -> None:
    maker = {"buy": "False", "sell": "True"}  # the buyer made the book when the taker sold
    agg = [
        f"{i},{t.price},{t.amount},{i},{i},{t.time_ms},{maker[t.side]},True"
        for i, t in enumerate(TRADES)
    ]
    raw = [
        f"{i},{t.price},{t.amount},{t.price * t.amount},{t.time_ms},{maker[t.side]},True"
        for i, t in enumerate(TRADES)
    ]
    for name, lines, layout in (("BTCUSDT-aggTrades-2024-01.csv", agg, "binance-aggtrades"),
                                ("BTCUSDT-trades-2024-01.csv", raw, "binance-trades")):  # fmt: skip
        parsed = read_file(_write(tmp_path / name, lines))
        assert parsed.layout == layout
        assert [(t.time_ms, t.price, t.side) for t in parsed.trades] == [
            (t.time_ms, t.price, t.side) for t in TRADES
        ]
        assert [t.trade_id for t in parsed.trades] == [str(i) for i in range(len(TRADES))]


def test_parquet_and_feather_with_datetime_columns_are_read(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        [c[:6] for c in CANDLES],
        orient="row",
        schema=["date", "open", "high", "low", "close", "volume"],
    ).with_columns(pl.from_epoch("date", time_unit="ms").dt.replace_time_zone("UTC"))
    frame.write_parquet(tmp_path / "BTC_USDT-1m.parquet")
    frame.write_ipc(tmp_path / "BTC_USDT-1m.feather")
    for name in ("BTC_USDT-1m.parquet", "BTC_USDT-1m.feather"):
        parsed = read_file(tmp_path / name)
        assert parsed.candles == _plain(CANDLES), name


def test_zip_and_gzip_archives_are_read_as_their_csv(tmp_path: Path) -> None:
    body = "".join(_kline(c) + "\n" for c in CANDLES)
    with zipfile.ZipFile(tmp_path / "BTCUSDT-1m-2024-01.zip", "w") as archive:
        archive.writestr("BTCUSDT-1m-2024-01.csv", body)
    (tmp_path / "BTCUSDT-1m.csv.gz").write_bytes(gzip.compress(body.encode()))
    for name in ("BTCUSDT-1m-2024-01.zip", "BTCUSDT-1m.csv.gz"):
        assert read_file(tmp_path / name).candles == CANDLES, name


def test_explicit_columns_by_index_and_by_name(tmp_path: Path) -> None:
    odd = _write(
        tmp_path / "odd.csv",
        [f"x,{c.volume},{c.close},{c.open},{c.high},{c.low},{c.open_ms // 1000}" for c in CANDLES],
    )
    by_index = ColumnMap.parse("ts=6,open=3,high=4,low=5,close=2,volume=1")
    assert read_file(odd, columns=by_index).candles == _plain(CANDLES)
    named = _write(
        tmp_path / "named.csv",
        ["When,Px,Qty,Who", *(f"{t.time_ms},{t.price},{t.amount},{t.side}" for t in TRADES)],
    )
    parsed = read_file(named, columns=ColumnMap.parse("ts=When,price=Px,amount=Qty,side=Who"))
    assert parsed.layout == "columns" and len(parsed.trades) == len(TRADES)


def test_column_maps_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ROLE=INDEX"):
        ColumnMap.parse("ts=0,colour=1")
    with pytest.raises(UsageError, match="candles or trades, not both"):
        ColumnMap.parse("ts=0,open=1,price=2")
    mystery = _write(tmp_path / "mystery.csv", [f"{c.open_ms},{c.open},{c.low}" for c in CANDLES])
    with pytest.raises(UsageError, match="candles need high, volume as well"):
        read_file(mystery, columns=ColumnMap.parse("ts=0,open=1,low=2,close=1"))


def test_a_layout_it_cannot_tell_names_the_columns_flag(tmp_path: Path) -> None:
    path = _write(tmp_path / "mystery.csv", ["1,2,3", "4,5,6"])
    with pytest.raises(UsageError, match="--columns"):
        read_file(path)
    with pytest.raises(NotFound):
        read_file(tmp_path / "missing.csv")


def test_malformed_rows_are_reported_by_file_and_line_and_the_rest_imported(tmp_path: Path) -> None:
    c = CANDLES
    lines = [
        "timestamp,open,high,low,close,volume",   # line 1
        _ohlcv(c[0]),                             # 2
        f"{c[1].open_ms},{c[1].open},oops,{c[1].low},{c[1].close},{c[1].volume}",  # 3
        "",                                       # 4: blank lines are skipped, not rejected
        _ohlcv(c[2]),                             # 5
        f"{c[3].open_ms},1,2,3",                  # 6
        f"{c[4].open_ms},10,9,11,10,1",           # 7
        f"{c[5].open_ms + 30_000},10,11,9,10,1",  # 8
        _ohlcv(c[2]),                             # 9: a duplicate of line 5
        "yesterday,10,11,9,10,1",                 # 10
        f"{c[6].open_ms},10,11,9,10,-1",          # 11
        _ohlcv(c[7]),                             # 12
    ]  # fmt: skip
    path = _write(tmp_path / "BTCUSDT-1m.csv", lines)
    with MarketStore(tmp_path / "market.db") as store:
        refused = import_file(store, path, exchange="test")
        assert (refused.valid, refused.imported, refused.rejected) == (3, 0, 7)
        assert store.series() == []  # rejected rows not allowed: nothing written
        report = import_file(store, path, exchange="test", allow_rejects=True)
        held = store.candles(SeriesKey("test", "BTC/USDT", "1m"))
    assert report.errors == [
        f"{path}:3: high 'oops' is not a number",
        f"{path}:6: expected 6 fields, found 4",
        f"{path}:7: high 9.0 is below low 11.0",
        f"{path}:8: open time '{c[5].open_ms + 30_000}' is not on a 1m boundary",
        f"{path}:9: duplicate open time (first on line 5)",
        f"{path}:10: timestamp 'yesterday' is neither epoch s/ms/µs, ISO 8601 nor a date form "
        "bfx knows; give --time-format (strftime, e.g. '%d.%m.%Y %H:%M')",
        f"{path}:11: volume -1.0 is negative",
    ]
    assert (report.rows_read, report.imported, report.rejected) == (10, 3, 7)
    assert held == _plain([c[0], c[2], c[7]])


def test_a_file_with_no_valid_row_writes_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path / "BTCUSDT-1m.csv", [f"{c.open_ms},x,2,3,4,5" for c in CANDLES[:2]])
    with MarketStore(tmp_path / "market.db") as store:
        with pytest.raises(BfxError, match="none valid") as caught:
            import_file(store, path)
        assert store.series() == []
    # the message quotes the first data row and what in it could not be read
    assert f"first data row (line 1): '{CANDLES[0].open_ms},x,2,3,4,5'" in str(caught.value)
    assert str(caught.value).endswith("open 'x' is not a number")


def test_the_report_names_the_series_and_its_time_span(tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", [_ohlcv(c) for c in CANDLES[::5]])
    with MarketStore(tmp_path / "market.db") as store:
        with pytest.raises(UsageError, match="--symbol"):
            import_file(store, path)
        report = import_file(store, path, symbol="ADA/USDT")
    assert (report.exchange, report.symbol, report.timeframe) == ("imported", "ADA/USDT", "5m")
    assert report.first is not None and report.last is not None
    assert int(report.first.timestamp() * 1000) == CANDLES[0].open_ms
    assert int(report.last.timestamp() * 1000) == CANDLES[15].open_ms


@pytest.mark.parametrize(
    ("name", "symbol", "timeframe"),
    [
        ("BTCUSDT-1m-2024-01.csv", "BTC/USDT", "1m"),
        ("BTC_USDT-5m.json", "BTC/USDT", "5m"),
        ("BTC_USDT_USDT-1h-futures.feather", "BTC/USDT:USDT", "1h"),
        ("ethusdt_15m.csv", "ETH/USDT", "15m"),
        ("SOLUSDT-aggTrades-2024-01-01.zip", "SOL/USDT", None),
        ("prices.csv", None, None),
    ],
)
def test_file_names_say_symbol_and_timeframe(
    name: str, symbol: str | None, timeframe: str | None
) -> None:
    assert importers.symbol_from_name(name) == symbol
    assert importers.timeframe_from_name(name) == timeframe


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trips_what_import_read(tmp_path: Path, suffix: str) -> None:
    source = _write(tmp_path / "BTCUSDT-1m-2024-01.csv", [_kline(c) for c in CANDLES])
    tape = _write(
        tmp_path / "BTCUSDT-trades.csv",
        [
            "timestamp,id,price,amount,side",
            *(f"{t.time_ms},{t.trade_id},{t.price},{t.amount},{t.side}" for t in TRADES),
        ],
    )
    with MarketStore(tmp_path / "market.db") as store:
        import_file(store, source, exchange="a")
        import_file(store, tape, exchange="a")
        key = SeriesKey("a", "BTC/USDT", "1m")
        assert importers.export_candles(store, key, tmp_path / f"out{suffix}") == len(CANDLES)
        assert importers.export_trades(store, "a", "BTC/USDT", tmp_path / f"tape{suffix}") == len(
            TRADES
        )
        import_file(store, tmp_path / f"out{suffix}", exchange="b", symbol="BTC/USDT")
        import_file(store, tmp_path / f"tape{suffix}", exchange="b", symbol="BTC/USDT")
        assert store.candles(SeriesKey("b", "BTC/USDT", "1m")) == store.candles(key) == CANDLES
        assert store.trades("b", "BTC/USDT") == store.trades("a", "BTC/USDT") == TRADES


# --- the exports people actually have -----------------------------------------------------------


def _hourly(n: int = 12) -> list[CandleRow]:
    """Hourly candles from 2019-10-17 00:00 UTC, built from the synthetic minutes."""
    minutes = generate_candles("BTC/USDT", 1_571_270_400_000, 60 * n)
    return [
        CandleRow(
            hour[0].open_ms, hour[0].open, max(c.high for c in hour), min(c.low for c in hour),
            hour[-1].close, round(sum(c.volume for c in hour), 6),
        )
        for hour in (minutes[i : i + 60] for i in range(0, 60 * n, 60))
    ]  # fmt: skip


def test_a_cryptodatadownload_export_is_read_whole(tmp_path: Path) -> None:
    """URL preamble, `09-AM` dates, a symbol column, two volume columns, newest row first."""
    hours = _hourly()
    lines = [
        "https://www.CryptoDataDownload.com",
        "Date,Symbol,Open,High,Low,Close,Volume BTC,Volume USDT",
        *(
            f"{_at(c.open_ms):%Y-%m-%d %I-%p},BTCUSDT,{c.open},{c.high},{c.low},{c.close},"
            f"{c.volume},{round(c.volume * c.close, 2)}"
            for c in reversed(hours)
        ),
    ]
    parsed = read_file(_write(tmp_path / "Binance_BTCUSDT_1h.csv", lines))
    assert (parsed.layout, parsed.symbol, parsed.timeframe) == ("candles-header", "BTC/USDT", "1h")
    assert parsed.rejected == [] and parsed.candles == hours  # oldest first, base volume
    assert parsed.notes == [
        "skipped 1 line before the header (line 1: 'https://www.CryptoDataDownload.com')",
        "volume from 'Volume BTC' (the base currency); 'Volume USDT' left out — give "
        "--columns volume=NAME to choose another",
        "times read as %Y-%m-%d %I-%p",
        "rows were newest first; stored oldest first",
    ]
    quote = read_file(tmp_path / "Binance_BTCUSDT_1h.csv", columns=ColumnMap.parse("vol=7"))
    assert [c.volume for c in quote.candles] == [round(c.volume * c.close, 2) for c in hours]
    assert quote.layout == "candles-header+columns"


def test_the_base_volume_is_told_by_the_symbol_not_by_position(tmp_path: Path) -> None:
    lines = [
        "unix,symbol,open,high,low,close,Volume BTC,Volume ETH",
        *(f"{c.open_ms},ETH/BTC,{c.open},{c.high},{c.low},{c.close},{c.volume * 2},{c.volume}"
          for c in CANDLES),
    ]  # fmt: skip
    parsed = read_file(_write(tmp_path / "export.csv", lines))
    assert parsed.symbol == "ETH/BTC"  # from the symbol column: the file name says nothing
    assert [c.volume for c in parsed.candles] == [c.volume for c in CANDLES]
    assert parsed.notes[0].startswith("volume from 'Volume ETH' (the base currency)")
    unsure = [line.replace("ETH/BTC", "") for line in lines]  # no symbol anywhere: say so
    parsed = read_file(_write(tmp_path / "unsure.csv", unsure), symbol=None)
    assert parsed.notes[0].startswith("volume from 'Volume BTC' (the first of them)")


def test_a_file_of_several_symbols_is_read_one_symbol_at_a_time(tmp_path: Path) -> None:
    lines = [
        "timestamp,pair,open,high,low,close,volume",
        *(f"{c.open_ms},{pair},{c.open},{c.high},{c.low},{c.close},{c.volume}"
          for c in CANDLES for pair in ("BTC-USDT", "ETH-USDT")),
    ]  # fmt: skip
    path = _write(tmp_path / "all.csv", lines)
    with pytest.raises(UsageError, match=r"holds 2 symbols \(BTCUSDT, ETHUSDT\); give --symbol"):
        read_file(path)
    parsed = read_file(path, symbol="ETH/USDT")
    assert parsed.candles == _plain(CANDLES) and parsed.rejected == []
    assert parsed.notes == ["kept the 20 rows of ETH/USDT; 20 rows of 1 other symbol left out"]


@pytest.mark.parametrize("index", ["dates", "numbers"])
def test_a_pandas_index_column_with_an_empty_name_is_read(tmp_path: Path, index: str) -> None:
    if index == "dates":  # df.to_csv() of a frame indexed by time
        lines = [",open,high,low,close,volume"]
        lines += [_ohlcv(c, _at(c.open_ms).strftime("%Y-%m-%d %H:%M:%S")) for c in CANDLES]
    else:  # df.reset_index().to_csv(): a row number first, the time in a named column
        lines = [",timestamp,open,high,low,close,volume"]
        lines += [f"{i},{_ohlcv(c)}" for i, c in enumerate(CANDLES)]
    parsed = read_file(_write(tmp_path / "BTCUSDT-1m.csv", lines))
    assert parsed.candles == _plain(CANDLES) and parsed.rejected == []


DATE_FORMS: dict[str, Callable[[int], str]] = {
    "dotted": lambda ms: _at(ms).strftime("%d.%m.%Y %H:%M"),
    "cdd-hour": lambda ms: _at(ms).strftime("%Y-%m-%d %I-%p"),
    "us-12h": lambda ms: _at(ms).strftime("%m/%d/%Y %I:%M %p"),
    "iso-space": lambda ms: _at(ms).strftime("%Y-%m-%d %H:%M:%S"),
    "epoch-us": lambda ms: str(ms * 1000),
}


@pytest.mark.parametrize("form", DATE_FORMS.values(), ids=DATE_FORMS.keys())
def test_hourly_dates_in_the_forms_exports_use_are_detected(
    tmp_path: Path, form: Callable[[int], str]
) -> None:
    hours = _hourly(30)  # past the 12th hour: 12-hour clocks must tell AM from PM
    lines = ["Date,Open,High,Low,Close,Volume", *(_ohlcv(c, form(c.open_ms)) for c in hours)]
    parsed = read_file(_write(tmp_path / "BTCUSDT-1h.csv", lines))
    assert parsed.rejected == [] and parsed.candles == hours


def test_a_day_month_order_the_data_cannot_settle_asks_for_a_time_format(tmp_path: Path) -> None:
    second = generate_candles("BTC/USDT", START + 86_400_000, 20)  # 02/01/2024: 2 Jan or 1 Feb?
    lines = ["Date,Open,High,Low,Close,Volume"]
    lines += [_ohlcv(c, _at(c.open_ms).strftime("%d/%m/%Y %H:%M")) for c in second]
    path = _write(tmp_path / "BTCUSDT-1m.csv", lines)
    with pytest.raises(UsageError, match=r"--time-format '%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'"):
        read_file(path)
    assert read_file(path, time_format="%d/%m/%Y %H:%M").candles == _plain(second)


def test_a_time_format_reads_what_detection_cannot_and_names_itself_in_rejects(
    tmp_path: Path,
) -> None:
    lines = ["when,open,high,low,close,volume"]
    lines += [_ohlcv(c, _at(c.open_ms).strftime("%Y%m%d-%Hh%M")) for c in CANDLES]
    lines.append(_ohlcv(CANDLES[0], "sometime"))
    path = _write(tmp_path / "BTCUSDT-1m.csv", lines)
    with pytest.raises(UsageError, match="give --columns"):
        read_file(path)  # `when` names no role bfx knows
    parsed = read_file(path, columns=ColumnMap.parse("ts=when"), time_format="%Y%m%d-%Hh%M")
    assert parsed.candles == _plain(CANDLES) and parsed.layout == "columns"
    assert parsed.errors == [f"{path}:22: timestamp 'sometime' does not match --time-format "
                             "'%Y%m%d-%Hh%M'"]  # fmt: skip
    with pytest.raises(UsageError, match="no strftime directive"):
        read_file(path, time_format="YYYY-MM-DD")


def test_errors_quote_the_first_data_row_never_the_preamble(tmp_path: Path) -> None:
    preamble = "Exported by SomeTool v2 https://example.com"
    lines = [preamble, "a,b,c", "7,8,9", "10,11,12"]
    with pytest.raises(UsageError) as caught:
        read_file(_write(tmp_path / "BTCUSDT-1m.csv", lines))
    message = str(caught.value)
    assert "cannot tell candles or trades from the header a,b,c" in message
    assert "first data row, line 3: '7,8,9'" in message and "SomeTool" not in message
    bad_time = [preamble, "Date,Open,High,Low,Close,Volume", "17h on 3 Oct,1,2,0.5,1,1"]
    with pytest.raises(BfxError) as caught:
        read_file(_write(tmp_path / "ETHUSDT-1m.csv", bad_time))
    assert "first data row (line 3): '17h on 3 Oct,1,2,0.5,1,1': timestamp '17h on 3 Oct'" in str(
        caught.value
    )
    assert "SomeTool" not in str(caught.value)


# --- a timeframe that disagrees with the rows ----------------------------------------------------


def test_a_declared_timeframe_that_disagrees_with_the_rows_is_refused(tmp_path: Path) -> None:
    minutes = _write(tmp_path / "BTCUSDT-1m.csv", [_ohlcv(c) for c in CANDLES])
    with pytest.raises(UsageError, match=r"1m apart \(1m candles\), but --timeframe says 5m"):
        read_file(minutes, timeframe="5m")
    misnamed = _write(tmp_path / "BTCUSDT-5m.csv", [_ohlcv(c) for c in CANDLES])
    with pytest.raises(UsageError, match="but the file name says 5m; give --timeframe 1m"):
        read_file(misnamed)
    assert read_file(misnamed, timeframe="1m").candles == _plain(CANDLES)
    with pytest.raises(UsageError, match="cannot build 1m"):
        read_file(_write(tmp_path / "x.csv", [_ohlcv(c) for c in CANDLES[::5]]),
                  symbol="B/C", timeframe="1m", resample=True)  # fmt: skip


def test_resampling_builds_what_the_live_aggregator_builds(tmp_path: Path) -> None:
    minutes = generate_candles("BTC/USDT", START + 3 * 60_000, 62)  # 00:03 .. 01:04
    path = _write(tmp_path / "BTCUSDT-1m.csv", [_ohlcv(c) for c in minutes])
    parsed = read_file(path, timeframe="15m", resample=True)
    batch = candles.resample(pl.DataFrame(_plain(minutes), orient="row"), "15m")
    # the batch path and the live aggregator agree bit for bit; the bucket the file ends inside
    # (01:00, 5 of 15 minutes) has not closed, so it is not stored
    assert parsed.candles == candles.frame_rows(batch)[:-1]
    assert (parsed.timeframe, len(parsed.candles)) == ("15m", 4)
    assert parsed.notes == [
        "resampled 62 1m candles into 4 15m candles; 1 of them from fewer than 15 1m candles "
        "(gaps, or a bucket the file starts inside); the last 15m candle is left out: the file "
        "ends before it closes"
    ]


# --- files that are not market data --------------------------------------------------------------


def _damaged(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    noise = bytes(range(256)) * 8
    made = {
        "empty.csv": (b"", "the file is empty"),
        "blank.csv": (b"\n \n\n", "the file is empty"),
        "noise.csv": (noise, "not a text file"),
        "noise.json": (noise, "not a text file"),
        "noise.parquet": (noise, "not a readable parquet file"),
        "empty.parquet": (b"", "the file is empty"),
        "noise.feather": (noise, "not a readable feather file"),
        "noise.zip": (noise, "not a readable zip archive"),
        "noise.csv.gz": (noise, "not a gzip file"),
        "inner.csv.gz": (gzip.compress(noise), "not a text file"),
    }
    out = {}
    for name, (data, why) in made.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, why)
    return out


def test_binary_empty_or_damaged_files_are_one_usage_error_naming_file_and_why(
    tmp_path: Path,
) -> None:
    for name, (path, why) in _damaged(tmp_path).items():
        with pytest.raises(UsageError) as caught:
            read_file(path, symbol="BTC/USDT")
        assert str(caught.value).startswith(f"{path}: {why}"), name
        assert "\n" not in str(caught.value)


def test_utf16_exports_are_read_as_text(tmp_path: Path) -> None:
    lines = ["timestamp,open,high,low,close,volume", *(_ohlcv(c) for c in CANDLES)]
    path = tmp_path / "BTCUSDT-1m.csv"
    path.write_bytes("\r\n".join(lines).encode("utf-16"))  # Excel's "Unicode text"
    assert read_file(path).candles == _plain(CANDLES)
