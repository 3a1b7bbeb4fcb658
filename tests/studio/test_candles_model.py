"""The chart's headless logic: series upkeep, bucketing, the viewport, and the glyphs drawn."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barfinex_cli.studio.chart_model import (
    ZOOMS,
    Bar,
    CandleSeries,
    Level,
    Marker,
    View,
    bucketed,
    capacity,
    index_at,
    timeframe_seconds,
    visible,
)
from barfinex_cli.studio.chart_render import AXIS_WIDTH, Frame, Scale, render
from studio.chart_data import T0, walk


def _bar(minute: int, o: float, h: float, lo: float, c: float, v: float = 1.0) -> Bar:
    return Bar(T0 + timedelta(minutes=minute), o, h, lo, c, v)


def _text(grid: list[list[tuple[str, str]]]) -> list[str]:
    return ["".join(ch for ch, _ in row) for row in grid]


def test_a_closed_candle_replaces_the_forming_one_of_the_same_open_time() -> None:
    series = CandleSeries("1m", [_bar(0, 1, 2, 0.5, 1.5), _bar(1, 1.5, 1.6, 1.4, 1.5)])
    assert series.upsert(_bar(1, 1.5, 1.9, 1.2, 1.8)) == "replaced"
    assert [b.close for b in series.bars] == [1.5, 1.8]
    assert series.upsert(_bar(2, 1.8, 1.9, 1.7, 1.7)) == "appended"
    assert series.upsert(_bar(-1, 1, 1, 1, 1)) == "inserted"
    assert [b.time for b in series.bars] == sorted(b.time for b in series.bars)


def test_the_series_keeps_only_the_newest_max_bars() -> None:
    series = CandleSeries("15m", walk(30), max_bars=10)
    assert len(series.bars) == 10
    assert series.bars[-1] == walk(30)[-1]


def test_trades_move_the_forming_candle_and_open_the_next_one() -> None:
    series = CandleSeries("1m")
    series.apply_trade(100.0, 1.0, T0 + timedelta(seconds=5))
    series.apply_trade(103.0, 2.0, T0 + timedelta(seconds=20))
    bar = series.apply_trade(99.0, 0.5, T0 + timedelta(seconds=59))
    assert (bar.time, bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        T0, 100.0, 103.0, 99.0, 99.0, 3.5,
    )  # fmt: skip
    nxt = series.apply_trade(101.0, 1.0, T0 + timedelta(seconds=61))
    assert nxt.time == T0 + timedelta(minutes=1) and nxt.open == 101.0
    late = series.apply_trade(50.0, 1.0, T0 + timedelta(seconds=30))
    assert late == nxt and series.bars[0].low == 99.0  # a late trade leaves drawn candles alone


def test_unknown_timeframe_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'7m'"):
        timeframe_seconds("7m")


def test_bucketing_merges_aligned_groups_into_one_ohlcv_bar() -> None:
    bars = [_bar(i, 10 + i, 12 + i, 9 + i, 11 + i, 2.0) for i in range(1, 7)]  # 09:01 .. 09:06
    merged = bucketed(bars, 4, 60)  # buckets of 4 minutes aligned to the epoch: :00, :04
    assert [b.time.minute for b in merged] == [1, 4]
    first = merged[0]  # minutes 1-3
    assert (first.open, first.high, first.low, first.close, first.volume) == (11, 15, 10, 14, 6.0)
    assert merged[1].close == 17 and merged[1].volume == 6.0


@given(
    st.integers(1, 400), st.integers(0, len(ZOOMS) - 1), st.integers(0, 500), st.integers(1, 300)
)
def test_the_viewport_never_shows_more_than_fits_and_ends_at_the_offset(
    n: int, zoom: int, offset: int, columns: int
) -> None:
    series = CandleSeries("15m", walk(n, seed=n))
    view = View(zoom).scrolled(offset, n)
    shown = visible(series, view, columns)
    assert len(shown) <= capacity(columns, view)
    assert 0 <= view.offset <= n - 1
    if shown:
        last_source = series.bars[n - 1 - view.offset]
        assert shown[-1].time <= last_source.time
        assert shown[-1].close == last_source.close  # the bucket ends at the newest bar shown


def test_zoom_is_clamped_and_scrolling_moves_by_whole_buckets() -> None:
    view = View(0)
    assert view.zoomed(-1).zoom == 0
    assert View(len(ZOOMS) - 1).zoomed(5).zoom == len(ZOOMS) - 1
    assert view.scrolled(2, 1000).offset == 2 * ZOOMS[0].bucket
    assert View().scrolled(-3, 1000).offset == 0 and View().following


def test_centring_puts_the_candle_in_the_middle_of_the_screen() -> None:
    series = CandleSeries("15m", walk(300))
    view = View(4).centred_on(100, 300, 60)  # one column per candle
    shown = visible(series, view, 60)
    assert shown[len(shown) // 2].time == series.bars[100].time


def test_index_at_finds_the_candle_holding_a_time() -> None:
    bars = walk(5)
    assert index_at(bars, bars[2].time + timedelta(minutes=7)) == 2
    assert index_at(bars, bars[0].time - timedelta(seconds=1)) is None


def test_the_scale_maps_the_extremes_to_the_top_and_bottom_half_rows() -> None:
    scale = Scale(90.0, 110.0, 10)
    assert scale.half(110.0) == 0 and scale.half(90.0) == 19
    assert scale.half(200.0) == 0 and scale.half(0.0) == 19
    assert scale.price_at(0) > scale.price_at(9)


def _frame(bars: list[Bar], **extra: object) -> Frame:
    return Frame("X 1m", bars, View(5), 60, **extra)  # type: ignore[arg-type]


def test_an_up_candle_draws_a_body_with_wicks_on_its_centre_column() -> None:
    bars = [_bar(0, 100, 110, 90, 100), _bar(1, 95, 108, 92, 105)]  # a flat one, then up
    grid = render(_frame(bars), AXIS_WIDTH + 50, 14)
    col = 50 - 2  # the newest bar is rightmost: one body column in a slot of 2
    column = [row[col] for row in grid[1:10]]
    glyphs = "".join(ch for ch, _ in column).strip()
    assert "█" in glyphs and ("│" in glyphs or "╷" in glyphs or "╵" in glyphs)
    assert {style for ch, style in column if ch != " "} == {"up"}
    assert _text(grid)[0].startswith("X 1m  2026-11-20 09:01  O 95.0")


def test_the_tightest_zoom_draws_heavy_lines_so_neighbours_stay_apart() -> None:
    frame = Frame("X", walk(30), View(4), 900)  # one column per candle, no gap
    grid = render(frame, AXIS_WIDTH + 30, 16)
    candle = {ch for row in grid for ch, style in row if style in ("up", "down")}
    assert "┃" in candle and candle <= set("┃│╽╿╻╹╷╵ ")


def test_markers_land_below_longs_above_shorts_and_fills_at_their_price() -> None:
    bars = [_bar(i, 100, 101, 99, 100.5) for i in range(6)]
    marks = [
        Marker(bars[1].time, "long"),
        Marker(bars[3].time + timedelta(seconds=30), "short"),
        Marker(bars[4].time, "buy", 100.0),
        Marker(bars[5].time + timedelta(minutes=2), "sell", 100.0),  # past the forming candle
    ]
    grid = render(_frame(bars, markers=marks), AXIS_WIDTH + 12, 24)
    where = {style: (r, c) for r, row in enumerate(grid) for c, (_, style) in enumerate(row)
             if style in ("long", "short", "buy", "sell")}  # fmt: skip
    assert set(where) == {"long", "short", "buy"}
    candle_rows = [r for r, row in enumerate(grid) for ch, st_ in row if st_ == "up"]
    assert where["long"][0] > max(candle_rows) and where["short"][0] < min(candle_rows)
    assert where["long"][1] < where["short"][1] < where["buy"][1]


def test_stop_and_take_profit_draw_lines_and_axis_tags() -> None:
    bars = walk(20)
    levels = [Level(90.0, "stop"), Level(110.0, "take_profit")]
    grid = render(_frame(bars, levels=levels), 60, 20)
    text = _text(grid)
    stop_row = next(r for r, line in enumerate(text) if "SL 90" in line)
    tp_row = next(r for r, line in enumerate(text) if "TP 110" in line)
    assert tp_row < stop_row
    assert text[stop_row].count("┄") > 20 and grid[stop_row][0][1] == "stop"


def test_volume_is_drawn_beneath_with_the_biggest_bar_full_height() -> None:
    bars = [_bar(i, 100, 101, 99, 100.5, v) for i, v in enumerate([1.0, 4.0, 2.0])]
    grid = render(_frame(bars), AXIS_WIDTH + 10, 17)
    vol_rows = [row for row in grid if any(s.startswith("volume") for _, s in row)]
    assert len(vol_rows) == 2
    assert "█" in "".join(ch for ch, _ in vol_rows[0])  # only the 4.0 bar reaches the top row


def test_a_too_small_chart_says_so_and_an_empty_one_says_no_candles() -> None:
    assert _text(render(_frame(walk(5)), 15, 4))[0].startswith("chart needs")
    assert "no candles yet" in _text(render(_frame([]), 60, 10))[0]


def test_time_axis_labels_do_not_overlap_and_show_the_day_when_it_changes() -> None:
    bars = walk(200, minutes=15)
    frame = Frame("X", bars[-90:], View(5), 900)
    axis = _text(render(frame, AXIS_WIDTH + 180, 30))[-1]
    labels = [part for part in axis.split("╵") if part.strip()]
    assert len(labels) >= 5
    assert any("-" in label for label in labels)  # the first label and each new day carry a date


def test_focus_draws_a_guide_through_the_pointed_candle() -> None:
    bars = walk(10)
    grid = render(_frame(bars, focus=3), 60, 16)
    guides = {c for row in grid for c, (_, s) in enumerate(row) if s == "focus"}
    assert len(guides) == 1
    assert "2026-11-20 09:45" in _text(grid)[0]  # the info line describes the focused candle


def test_every_drawing_has_the_asked_size() -> None:
    grid = render(_frame(walk(50)), 77, 23)
    assert len(grid) == 23 and {len(row) for row in grid} == {77}


def test_doji_and_flat_series_still_draw() -> None:
    flat = [Bar(datetime(2026, 1, 1, 0, i, tzinfo=UTC), 5.0, 5.0, 5.0, 5.0, 0.0) for i in range(5)]
    text = _text(render(_frame(flat), 50, 12))
    assert any(ch in "".join(text) for ch in "▀▄█")


def test_the_chart_logic_and_the_web_launcher_import_without_textual() -> None:
    modules = ["barfinex_cli.studio.chart_model", "barfinex_cli.studio.chart_render",
               "barfinex_cli.studio.market_view", "barfinex_cli.studio.web"]  # fmt: skip
    probe = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n" + (
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('textual', 'textual_serve')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
