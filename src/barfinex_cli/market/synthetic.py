"""The bundled synthetic market: seeded 1m candles, trades and books that look like a crypto tape.

No package ships crypto minute data we may redistribute, so the default replay runs on this
generator instead. Everything it makes is labelled: its series live under the exchange name
`synthetic`, never under a real venue's. It is deterministic: the same seed, symbol and start give
the same candles on every machine (the per-symbol seed is a BLAKE2 hash, not Python's `hash`).

The model, per symbol:
- regimes (range, trend up, trend down) switch as a Markov chain with geometric durations; trends
  add a drift, ranges pull the price back to where the range began;
- volatility clusters: the innovation variance follows GARCH(1,1) on Student-t shocks;
- an intraday U-shape over the UTC day scales volume and volatility;
- a trade tape consistent with each candle (first trade = open, last = close, the high and low
  both printed, amounts summing to the volume) and a top of book around the close.
Candles are vectorised with numpy; only the GARCH recursion is a plain loop (it is sequential).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from dataclasses import dataclass

import numpy as np

from barfinex_cli.store.market import CandleRow, TradeRow

SYNTHETIC_EXCHANGE = "synthetic"
DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
DEFAULT_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DEFAULT_DAYS = 7
DEFAULT_SEED = 7
MINUTE_MS = 60_000
REGIMES = ("range", "up", "down")

_MEAN_MINUTES = (480.0, 240.0, 240.0)  # mean regime duration: ranges last longer than trends
_MIN_MINUTES = 30
_NEXT = ((0.0, 0.5, 0.5), (0.7, 0.0, 0.3), (0.7, 0.3, 0.0))  # jump chain: never to itself
_TREND = 0.08  # drift per minute in units of the mean per-minute volatility
_REVERT = 0.01  # per-minute pull back to the range's anchor price
_GARCH_ALPHA, _GARCH_BETA = 0.08, 0.90
_T_DF = 5.0


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    """How one synthetic symbol behaves: level, volatility, activity and precision."""

    base_price: float
    daily_vol: float
    volume_per_min: float
    trades_per_min: float
    price_decimals: int
    amount_decimals: int


PROFILES: dict[str, SymbolProfile] = {
    "BTC/USDT": SymbolProfile(42_000.0, 0.025, 12.0, 30.0, 2, 5),
    "ETH/USDT": SymbolProfile(2_300.0, 0.032, 150.0, 25.0, 2, 4),
    "SOL/USDT": SymbolProfile(100.0, 0.050, 2_500.0, 20.0, 3, 2),
}
_GENERIC = SymbolProfile(50.0, 0.040, 1_000.0, 15.0, 4, 3)


@dataclass(frozen=True, slots=True)
class SyntheticSeries:
    """Candles of one symbol with the hidden state that made them (regime and volatility)."""

    symbol: str
    candles: list[CandleRow]
    regimes: list[str]
    sigma: list[float]


@dataclass(frozen=True, slots=True)
class BookTop:
    """Top levels of a synthetic book at `time_ms`: `(price, amount)` pairs, best first."""

    time_ms: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


def profile_for(symbol: str) -> SymbolProfile:
    """Return the profile of a default symbol, or a generic one for any other name."""
    return PROFILES.get(symbol, _GENERIC)


def symbol_seed(seed: int, symbol: str, salt: int | str = "") -> int:
    """Return a stable 63-bit seed for (seed, symbol, salt), the same on every machine."""
    digest = hashlib.blake2b(f"{seed}|{symbol}|{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def generate_market(
    symbol: str,
    start_ms: int = DEFAULT_START_MS,
    minutes: int = DEFAULT_DAYS * 1440,
    seed: int = DEFAULT_SEED,
    profile: SymbolProfile | None = None,
) -> SyntheticSeries:
    """Generate `minutes` consecutive 1m candles of `symbol` from `start_ms` (aligned to 1m)."""
    if start_ms % MINUTE_MS:
        raise ValueError(f"start_ms {start_ms} is not on a minute boundary")
    p = profile or profile_for(symbol)
    n = max(int(minutes), 0)
    rng = np.random.default_rng(symbol_seed(seed, symbol))
    regime = _regimes(rng, n)
    minute_of_day = (start_ms // MINUTE_MS + np.arange(n)) % 1440
    intraday = 0.55 + 1.35 * (2.0 * minute_of_day / 1440.0 - 1.0) ** 2  # U-shape, mean 1
    sigma_bar = p.daily_vol / math.sqrt(1440.0)
    drift = np.select([regime == 1, regime == 2], [_TREND * sigma_bar, -_TREND * sigma_bar], 0.0)
    scale = np.where(regime == 0, 0.85, 1.15) * np.sqrt(intraday)
    shocks = rng.standard_t(_T_DF, n) * math.sqrt((_T_DF - 2.0) / _T_DF)
    fresh = np.diff(regime, prepend=-1) != 0
    returns, sigma = _garch_path(shocks, drift, scale, regime == 0, fresh, sigma_bar)

    close = np.round(p.base_price * np.exp(np.cumsum(returns)), p.price_decimals)
    open_ = np.concatenate(([round(p.base_price, p.price_decimals)], close[:-1]))[:n]
    excursion = np.abs(rng.standard_normal((2, n))) * sigma * scale * 0.7
    unit = 10.0**p.price_decimals
    high = np.round(
        np.ceil(np.maximum(open_, close) * np.exp(excursion[0]) * unit) / unit, p.price_decimals
    )
    low = np.round(
        np.floor(np.minimum(open_, close) * np.exp(-excursion[1]) * unit) / unit, p.price_decimals
    )
    high = np.maximum(high, np.maximum(open_, close))
    low = np.minimum(low, np.minimum(open_, close))

    activity = intraday * (sigma / sigma_bar) * np.exp(rng.normal(-0.06, 0.35, n))
    amount_unit = 10**p.amount_decimals
    units = np.maximum(np.round(p.volume_per_min * activity * amount_unit), 4).astype(np.int64)
    count = 4 + rng.poisson(p.trades_per_min * activity)
    count = np.minimum(np.minimum(count, units), 9_999)
    volume = units / amount_unit

    times = start_ms + MINUTE_MS * np.arange(n, dtype=np.int64)
    candles = [
        CandleRow(*row)
        for row in zip(
            times.tolist(),
            open_.tolist(),
            high.tolist(),
            low.tolist(),
            close.tolist(),
            volume.tolist(),
            count.tolist(),
            strict=True,
        )
    ]
    return SyntheticSeries(symbol, candles, [REGIMES[r] for r in regime.tolist()], sigma.tolist())


def generate_candles(
    symbol: str,
    start_ms: int = DEFAULT_START_MS,
    minutes: int = DEFAULT_DAYS * 1440,
    seed: int = DEFAULT_SEED,
) -> list[CandleRow]:
    """Return the synthetic 1m candles of `symbol` (see `generate_market`)."""
    return generate_market(symbol, start_ms, minutes, seed).candles


def default_dataset(
    symbols: tuple[str, ...] | list[str] = DEFAULT_SYMBOLS,
    *,
    start_ms: int = DEFAULT_START_MS,
    days: float = DEFAULT_DAYS,
    seed: int = DEFAULT_SEED,
) -> dict[str, list[CandleRow]]:
    """Return the synthetic dataset: `days` of 1m candles per symbol, keyed by symbol."""
    minutes = int(days * 1440)
    return {s: generate_candles(s, start_ms, minutes, seed) for s in symbols}


def generate_trades(
    candles: list[CandleRow], symbol: str, seed: int = DEFAULT_SEED
) -> list[TradeRow]:
    """Return a trade tape consistent with `candles`, in time order.

    Each minute's trades depend only on (seed, symbol, that candle), so a sub-range of candles
    yields exactly the trades the whole range yields there. A candle with zero volume has none.
    """
    p = profile_for(symbol)
    trades: list[TradeRow] = []
    for candle in candles:
        trades.extend(_minute_trades(candle, symbol, seed, p))
    return trades


def top_of_book(
    candle: CandleRow, symbol: str, seed: int = DEFAULT_SEED, levels: int = 5
) -> BookTop:
    """Return the book at the candle's close: the close sits on the best bid or the best ask."""
    p = profile_for(symbol)
    rnd = random.Random(symbol_seed(seed, symbol, f"book{candle.open_ms}"))
    tick = 10.0**-p.price_decimals
    spread = max(tick, min(0.03 * (candle.high - candle.low), candle.close * 2e-4))
    spread_ticks = max(1, round(spread * rnd.uniform(0.5, 1.5) / tick))
    close_units = round(candle.close / tick)
    bid_units = close_units - (spread_ticks if rnd.random() < 0.5 else 0)
    ask_units = bid_units + spread_ticks
    size = p.volume_per_min / p.trades_per_min
    bids, asks = [], []
    for level in range(levels):
        step = level * max(1, spread_ticks // 2)
        bids.append(
            (
                round((bid_units - step) * tick, p.price_decimals),
                round(size * rnd.lognormvariate(0.0, 0.6) * (1 + level), p.amount_decimals),
            )
        )
        asks.append(
            (
                round((ask_units + step) * tick, p.price_decimals),
                round(size * rnd.lognormvariate(0.0, 0.6) * (1 + level), p.amount_decimals),
            )
        )
    return BookTop(candle.open_ms + MINUTE_MS, bids, asks)


def _regimes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return the regime index of each minute: a Markov chain with geometric durations."""
    out = np.empty(n, dtype=np.int8)
    state = int(rng.integers(3))
    t = 0
    while t < n:
        length = max(_MIN_MINUTES, int(rng.geometric(1.0 / _MEAN_MINUTES[state])))
        out[t : t + length] = state
        t += length
        state = int(rng.choice(3, p=_NEXT[state]))
    return out


def _garch_path(
    shocks: np.ndarray,
    drift: np.ndarray,
    scale: np.ndarray,
    ranging: np.ndarray,
    fresh: np.ndarray,
    sigma_bar: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-minute log returns and GARCH volatility (a loop: each step needs the last)."""
    omega = sigma_bar**2 * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    var, eps, level, anchor = sigma_bar**2, 0.0, 0.0, 0.0
    out_r: list[float] = []
    out_s: list[float] = []
    for z, mu, k, is_range, new in zip(
        shocks.tolist(),
        drift.tolist(),
        scale.tolist(),
        ranging.tolist(),
        fresh.tolist(),
        strict=True,
    ):
        var = omega + _GARCH_ALPHA * eps * eps + _GARCH_BETA * var
        sd = math.sqrt(var)
        eps = sd * z
        if new:
            anchor = level
        r = mu + eps * k - (_REVERT * (level - anchor) if is_range else 0.0)
        level += r
        out_r.append(r)
        out_s.append(sd)
    return np.asarray(out_r), np.asarray(out_s)


def _minute_trades(candle: CandleRow, symbol: str, seed: int, p: SymbolProfile) -> list[TradeRow]:
    """Return the trades of one candle: open first, close last, high and low both printed."""
    decimals = p.amount_decimals
    units = round(candle.volume * 10**decimals)
    if units <= 0:
        return []
    count = max(4, candle.trades or 4)
    while units < count and decimals < 12:  # a thin candle: split it more finely
        decimals += 1
        units = round(candle.volume * 10**decimals)
    count = min(count, units, 9_999)
    rnd = random.Random(symbol_seed(seed, symbol, candle.open_ms))
    cuts = sorted(rnd.sample(range(1, units), count - 1))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, units], strict=True)]

    prices = _price_path(candle, count, rnd, p.price_decimals)
    offsets = sorted(rnd.sample(range(MINUTE_MS), count))
    base_id = candle.open_ms // MINUTE_MS
    trades: list[TradeRow] = []
    last = candle.open
    for i, (price, size, offset) in enumerate(zip(prices, sizes, offsets, strict=True)):
        if price > last:
            side = "buy"
        elif price < last:
            side = "sell"
        else:  # tick rule: an unchanged price keeps the last side
            side = trades[-1].side if trades else rnd.choice(("buy", "sell"))
        trades.append(
            TradeRow(
                candle.open_ms + offset, f"{base_id}-{i:04d}", price, size / 10**decimals, side
            )
        )
        last = price
    return trades


def _price_path(candle: CandleRow, count: int, rnd: random.Random, decimals: int) -> list[float]:
    """Return `count` prices from open to close touching high and low, inside [low, high]."""
    o, h, lo, c = candle.open, candle.high, candle.low, candle.close
    if count < 4:  # only a candle thinner than 4e-12 gets here: print what fits
        return [c] if count == 1 else [o, *[lo, h][: count - 2], c]
    i_high, i_low = rnd.sample(range(1, count - 1), 2)
    anchors = sorted([(0, o), (i_high, h), (i_low, lo), (count - 1, c)])
    step = 0.5 * (h - lo) / math.sqrt(count)
    path: list[float] = []
    for (a, pa), (b, pb) in itertools.pairwise(anchors):
        # a Brownian bridge from one anchor to the next, kept inside the candle
        walk = [0.0]
        for _ in range(b - a):
            walk.append(walk[-1] + rnd.gauss(0.0, step))
        path.append(pa)
        for j in range(1, b - a):
            x = pa + (pb - pa) * j / (b - a) + walk[j] - walk[-1] * j / (b - a)
            path.append(min(max(round(min(max(x, lo), h), decimals), lo), h))
    path.append(c)
    return path
