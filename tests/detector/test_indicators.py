"""Each indicator against a direct, textbook computation on small data; the vocabulary's errors."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence

import polars as pl
import pytest

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.engine import VectorEngine, prepare_frame
from barfinex_cli.detector.engine_incremental import IncrementalEngine
from barfinex_cli.detector.indicators_core import Node
from barfinex_cli.detector.strategy import Rule, Strategy

CLOSES = [10.0, 10.5, 10.2, 10.9, 11.4, 11.1, 10.8, 11.6, 12.3, 12.0, 11.7, 12.5, 13.1, 12.8,
          12.2, 12.9, 13.6, 13.3, 13.9, 14.4, 14.0, 13.5, 13.8, 14.6, 15.1, 14.7, 15.3, 15.0,
          15.8, 16.2, 15.9, 16.5]  # fmt: skip
Values = list[float | None]
FrameOf = Callable[..., pl.DataFrame]


def series(node: Node, frame: pl.DataFrame) -> Values:
    """Return a node's values over `frame`, checking both engines give the same list."""
    condition = node if node.kind == "bool" else node > 0
    strategy = Strategy("probe", ["X/Y"], "1m", [Rule("r", condition)], threshold=1.0)
    engine = VectorEngine(strategy)
    prepared = prepare_frame(frame)
    nodes, failed = engine.node_frame(prepared)
    assert failed == {}
    slot = engine.plan.slot[node.key]
    vector = nodes[f"__n{slot}"].to_list()
    live, values = IncrementalEngine(strategy), []
    for row in prepared.iter_rows(named=True):
        live.on_candle("X/Y", row)
        values.append(live.series["X/Y"].values[slot])
    assert values == vector
    return vector


def close_to(got: Values, want: Values) -> bool:
    return len(got) == len(want) and all(
        (g is None and w is None)
        or (g is not None and w is not None and math.isclose(g, w, rel_tol=1e-9))
        for g, w in zip(got, want, strict=True)
    )


def ref_sma(xs: Sequence[float], n: int) -> Values:
    return [None if i < n - 1 else sum(xs[i - n + 1 : i + 1]) / n for i in range(len(xs))]


def ref_smooth(xs: Sequence[float | None], n: int, alpha: float) -> Values:
    """Textbook smoothing: the mean of the first n defined values, then a*x + (1-a)*y."""
    out: Values = []
    seen: list[float] = []
    y: float | None = None
    for x in xs:
        if x is None:
            out.append(None)
            continue
        if y is None:
            seen.append(x)
            if len(seen) == n:
                y = sum(seen) / n
            out.append(y)
            continue
        y = alpha * x + (1 - alpha) * y
        out.append(y)
    return out


def ref_wilder_inputs(closes: Sequence[float]) -> tuple[Values, Values]:
    gains: Values = [None] + [max(b - a, 0.0) for a, b in itertools.pairwise(closes)]
    losses: Values = [None] + [max(a - b, 0.0) for a, b in itertools.pairwise(closes)]
    return gains, losses


def ref_rsi(closes: Sequence[float], n: int) -> Values:
    gains, losses = ref_wilder_inputs(closes)
    ag, al = ref_smooth(gains, n, 1 / n), ref_smooth(losses, n, 1 / n)
    return [
        None
        if g is None or lo is None
        else (50.0 if g + lo == 0 else 100 - 100 / (1 + g / lo) if lo else 100.0)
        for g, lo in zip(ag, al, strict=True)
    ]


def ref_dmi(frame: pl.DataFrame, n: int) -> tuple[Values, Values, Values, Values]:
    h, lo, c = frame["high"].to_list(), frame["low"].to_list(), frame["close"].to_list()
    tr: Values = [None]
    pdm: Values = [None]
    mdm: Values = [None]
    for i in range(1, len(c)):
        tr.append(max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])))
        up, down = h[i] - h[i - 1], lo[i - 1] - lo[i]
        pdm.append(up if up > down and up > 0 else 0.0)
        mdm.append(down if down > up and down > 0 else 0.0)
    atr = ref_smooth(tr, n, 1 / n)
    sp, sm = ref_smooth(pdm, n, 1 / n), ref_smooth(mdm, n, 1 / n)
    pdi = [None if a is None else 100 * p / a for p, a in zip(sp, atr, strict=True)]
    mdi = [None if a is None else 100 * m / a for m, a in zip(sm, atr, strict=True)]
    dx = [
        None if p is None or m is None else 100 * abs(p - m) / (p + m)
        for p, m in zip(pdi, mdi, strict=True)
    ]
    return atr, pdi, mdi, ref_smooth(dx, n, 1 / n)


@pytest.fixture
def candles(frame_of: FrameOf) -> pl.DataFrame:
    return frame_of(CLOSES, spread=0.004, volumes=[5.0 + (i * 7) % 11 for i in range(len(CLOSES))])


def test_sma_ema_and_rma_match_the_textbook(candles: pl.DataFrame) -> None:
    assert close_to(series(ta.sma("close", 5), candles), ref_sma(CLOSES, 5))
    assert close_to(series(ta.ema("close", 5), candles), ref_smooth(CLOSES, 5, 2 / 6))
    assert close_to(series(ta.rma("close", 4), candles), ref_smooth(CLOSES, 4, 1 / 4))


def test_rsi_is_wilders_and_50_on_a_flat_market(candles: pl.DataFrame, frame_of: FrameOf) -> None:
    assert close_to(series(ta.rsi(14), candles), ref_rsi(CLOSES, 14))
    flat = series(ta.rsi(3), frame_of([5.0] * 8))
    assert flat == [None, None, None, 50.0, 50.0, 50.0, 50.0, 50.0]
    rising = series(ta.rsi(3), frame_of([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert rising[3:] == [100.0, 100.0]


def test_macd_line_signal_and_histogram(candles: pl.DataFrame) -> None:
    m = ta.macd(3, 6, 4)
    fast, slow = ref_smooth(CLOSES, 3, 2 / 4), ref_smooth(CLOSES, 6, 2 / 7)
    line = [None if s is None else f - s for f, s in zip(fast, slow, strict=True)]  # type: ignore[operator]
    signal = ref_smooth(line, 4, 2 / 5)
    hist = [None if g is None else ln - g for ln, g in zip(line, signal, strict=True)]  # type: ignore[operator]
    assert close_to(series(m.line, candles), line)
    assert close_to(series(m.signal, candles), signal)
    assert close_to(series(m.hist, candles), hist)
    assert series(m.signal, candles).index(signal[8]) == 8  # first defined at 6 - 1 + 4 - 1


def test_bollinger_bands_use_the_population_deviation(candles: pl.DataFrame) -> None:
    bands, n = ta.bollinger(6, 2.5), 6
    sd = [
        None if i < n - 1 else statistics.pstdev(CLOSES[i - n + 1 : i + 1])
        for i in range(len(CLOSES))
    ]
    mid = ref_sma(CLOSES, n)
    assert close_to(series(ta.stdev("close", n), candles), sd)
    assert close_to(series(bands.mid, candles), mid)
    assert close_to(
        series(bands.upper, candles),
        [None if m is None else m + 2.5 * s for m, s in zip(mid, sd, strict=True)],
    )  # type: ignore[operator]
    assert close_to(
        series(bands.lower, candles),
        [None if m is None else m - 2.5 * s for m, s in zip(mid, sd, strict=True)],
    )  # type: ignore[operator]


def test_true_range_atr_and_the_directional_index(candles: pl.DataFrame) -> None:
    atr, pdi, mdi, adx = ref_dmi(candles, 5)
    assert close_to(series(ta.atr(5), candles), atr)
    assert close_to(series(ta.plus_di(5), candles), pdi)
    assert close_to(series(ta.minus_di(5), candles), mdi)
    assert close_to(series(ta.adx(5), candles), adx)
    got = series(ta.adx(5), candles)
    assert got[8] is None and got[9] is not None  # ADX(n) is first defined on candle 2n


def test_vwap_resets_each_utc_day_or_rolls_over_n(frame_of: FrameOf) -> None:
    frame = frame_of(
        [10.0, 11.0, 12.0, 13.0, 14.0], volumes=[1.0, 2.0, 0.0, 4.0, 5.0], step_ms=10 * 3_600_000
    )  # 10h candles: a new UTC day at candles 3 and 5
    h, lo, c = frame["high"].to_list(), frame["low"].to_list(), frame["close"].to_list()
    v = frame["volume"].to_list()
    tp = [(a + b + d) / 3 for a, b, d in zip(h, lo, c, strict=True)]
    days = [[0, 1, 2], [3, 4]]  # candle 2 opens at 20:00 of day one
    want: Values = []
    for day in days:
        pv = vol = 0.0
        for i in day:
            pv, vol = pv + tp[i] * v[i], vol + v[i]
            want.append(pv / vol)
    assert close_to(series(ta.vwap(), frame), want)
    rolling = [None] + [
        (tp[i - 1] * v[i - 1] + tp[i] * v[i]) / (v[i - 1] + v[i]) for i in range(1, 5)
    ]
    assert close_to(series(ta.vwap(2), frame), rolling)


def test_zscores_highest_lowest_and_shift(candles: pl.DataFrame) -> None:
    n, vols = 5, candles["volume"].to_list()

    def z(xs: list[float], i: int) -> float | None:
        if i < n - 1:
            return None
        window = xs[i - n + 1 : i + 1]
        sd = statistics.pstdev(window)
        return 0.0 if sd == 0 else (xs[i] - statistics.fmean(window)) / sd

    assert close_to(series(ta.zscore("close", n), candles), [z(CLOSES, i) for i in range(32)])
    assert close_to(series(ta.volume_zscore(n), candles), [z(vols, i) for i in range(32)])
    highs = candles["high"].to_list()
    assert series(ta.highest("high", 4), candles) == [
        None if i < 3 else max(highs[i - 3 : i + 1]) for i in range(32)
    ]
    assert series(ta.lowest("close", 3), candles) == [
        None if i < 2 else min(CLOSES[i - 2 : i + 1]) for i in range(32)
    ]
    assert series(ta.shift("close", 2), candles) == [None, None, *CLOSES[:-2]]


def test_crosses_fire_only_on_the_crossing_candle(frame_of: FrameOf) -> None:
    frame = frame_of([1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0])
    two = ta.col("close") * 0 + 2
    # Kleene logic on the first candle: (1 > 2) & unknown is False, (1 < 2) & unknown is unknown
    assert series(ta.crosses_above("close", two), frame) == [
        False,
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    assert series(ta.crosses_below("close", two), frame) == [
        None,
        False,
        False,
        False,
        True,
        False,
        False,
    ]


def test_flow_imbalance_and_delta_read_taker_volumes(frame_of: FrameOf) -> None:
    frame = frame_of([1.0, 1.0, 1.0], volumes=[10.0, 0.0, 4.0], buy_share=[0.75, 0.5, 0.0])
    assert series(ta.flow_imbalance(), frame) == [0.5, 0.0, -1.0]
    assert series(ta.flow_delta(), frame) == [5.0, 0.0, -4.0]


def test_lookback_counts_the_leading_undefined_candles(candles: pl.DataFrame) -> None:
    nodes = [
        ta.sma("close", 7),
        ta.ema("close", 9),
        ta.rsi(14),
        ta.adx(6),
        ta.atr(10),
        ta.macd(5, 10, 4).hist,
        ta.bollinger(20).upper,
        ta.highest("high", 11).shift(2),
        ta.volume_zscore(8),
        ta.vwap(),
        ta.vwap(4),
    ]
    for node in nodes:
        values = series(node, candles)
        leading = next((i for i, v in enumerate(values) if v is not None), len(values))
        assert leading == node.lookback, node
        assert all(v is not None for v in values[leading:]), node


def test_unknown_indicator_names_the_close_ones() -> None:
    with pytest.raises(AttributeError, match=r"unknown indicator ta\.emaa; did you mean ta\.ema"):
        ta.emaa  # noqa: B018
    with pytest.raises(TypeError, match="unknown candle column 'clsoe'; did you mean close"):
        ta.col("clsoe")


def test_misused_nodes_fail_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"combine conditions with & \| ~"):
        bool(ta.rsi(14) > 70)
    with pytest.raises(TypeError, match="compare it first"):
        ta.rsi(14) & (ta.close > 1)
    with pytest.raises(TypeError, match="is a condition, not a number"):
        (ta.close > 1) + 1
    with pytest.raises(ValueError, match="would read the future"):
        ta.shift("close", -1)
    with pytest.raises(ValueError, match="period must be a whole number"):
        ta.sma("close", 0)
