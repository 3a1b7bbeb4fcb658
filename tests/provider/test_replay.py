"""The replay connector: live-feed order and pacing, history that never leaks the future, files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path

import pytest

from barfinex_cli.contracts.market import BookUpdated, CandleClosed, TradeExecuted
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import NotFound, UsageError
from barfinex_cli.market import synthetic
from barfinex_cli.provider.connectors.replay import ReplayConnector
from barfinex_cli.store.market import CandleRow, TradeRow

START = synthetic.DEFAULT_START_MS
MINUTE = 60_000
DAY = 1 / 24  # an hour, as a fraction of a day: keeps the synthetic source small


def _ms(candle: CandleClosed) -> int:
    return int(candle.open_time.timestamp() * 1000)


async def _take(stream: AsyncGenerator[Payload, None], n: int | None = None) -> list[Payload]:
    out: list[Payload] = []
    async with aclosing(stream) as events:
        async for event in events:
            out.append(event)
            if n is not None and len(out) >= n:
                break
    return out


async def test_max_speed_emits_every_candle_in_time_order() -> None:
    replay = ReplayConnector(days=DAY, book=False)
    await replay.start()
    events = await _take(replay.stream())
    candles = [e for e in events if isinstance(e, CandleClosed)]
    assert len(candles) == len(events) == 3 * 60
    assert [(_ms(c), c.symbol) for c in candles] == sorted((_ms(c), c.symbol) for c in candles)
    assert {c.exchange for c in candles} == {"synthetic"}
    btc = [c for c in candles if c.symbol == "BTC/USDT"]
    assert [_ms(c) for c in btc] == [START + i * MINUTE for i in range(60)]
    expected = synthetic.generate_candles("BTC/USDT", START, 60)
    assert [float(c.close) for c in btc] == [c.close for c in expected]
    assert {c.timeframe for c in candles} == {"1m"}


async def test_trades_precede_the_close_of_their_minute_and_books_follow_it() -> None:
    replay = ReplayConnector(days=DAY, trades=True, symbols=("ETH/USDT",))
    await replay.start()
    events = await _take(replay.stream())
    minute: list[TradeExecuted] = []
    closes = 0
    for i, event in enumerate(events):
        if isinstance(event, TradeExecuted):
            minute.append(event)
        elif isinstance(event, CandleClosed):
            closes += 1
            assert minute[0].price == event.open and minute[-1].price == event.close
            assert max(t.price for t in minute) == event.high
            assert sum(t.amount for t in minute) == pytest.approx(event.volume)
            assert all(
                _ms(event) <= t.time.timestamp() * 1000 < _ms(event) + MINUTE for t in minute
            )
            book = events[i + 1]
            assert isinstance(book, BookUpdated)
            assert book.bids[0][0] <= event.close <= book.asks[0][0]
            assert book.bids[0][0] < book.asks[0][0]
            minute = []
    assert closes == 60 and minute == []


async def test_a_speed_paces_the_stream_on_the_replay_clock() -> None:
    replay = ReplayConnector(days=DAY, speed=6000, book=False, symbols=("BTC/USDT",))
    loop = asyncio.get_running_loop()
    began = loop.time()
    arrived: list[tuple[float, int]] = []
    async with aclosing(replay.stream()) as events:
        async for event in events:
            assert isinstance(event, CandleClosed)
            arrived.append((loop.time(), _ms(event)))
            if len(arrived) == 20:
                break
    # 6000x: a replay minute is 10 ms of wall time, and no candle comes before its due time (a
    # loaded machine can only make it later, so this holds however slow the run is)
    assert [ms for _, ms in arrived] == [START + i * MINUTE for i in range(20)]
    for at, ms in arrived:
        assert at - began >= (ms - START) / 1000 / 6000
    # the lag is how late the last candle came against that schedule, no more
    last_at, last_ms = arrived[-1]
    due = began + (last_ms - START) / 1000 / 6000
    assert 0.0 <= replay.health().lag_ms <= (last_at - due) * 1000.0


async def test_speed_accepts_max_and_an_x_suffix() -> None:
    assert ReplayConnector(speed="max").config.speed is None
    assert ReplayConnector(speed="60x").config.speed == 60.0
    with pytest.raises(UsageError, match="speed"):
        ReplayConnector(speed=0)


async def test_history_before_the_start_is_served_not_streamed() -> None:
    replay = ReplayConnector(days=DAY, skip=20, book=False)
    await replay.start()
    assert replay.live_start_ms == START + 20 * MINUTE
    history = await replay.fetch_candles("SOL/USDT", "1m", since_ms=0)
    assert [c.open_ms for c in history] == [START + i * MINUTE for i in range(20)]
    events = await _take(replay.stream())
    first = events[0]
    assert isinstance(first, CandleClosed) and _ms(first) == START + 20 * MINUTE
    assert len(events) == 3 * 40


async def test_fetch_candles_answers_ranges_but_never_the_future() -> None:
    replay = ReplayConnector(days=DAY, start_ms=START + 30 * MINUTE, book=False)
    await replay.start()
    everything = synthetic.generate_candles("BTC/USDT", START, 60)
    got = await replay.fetch_candles("BTC/USDT", "1m", START + 5 * MINUTE, START + 9 * MINUTE)
    assert got == everything[5:10]
    assert await replay.fetch_candles("BTC/USDT", "1m", START, limit=3) == everything[:3]
    assert await replay.fetch_candles("BTC/USDT", "1m", START) == everything[:30]
    await _take(replay.stream(), 3 * 10)  # ten more minutes close for each symbol
    assert await replay.fetch_candles("BTC/USDT", "1m", START) == everything[:40]
    with pytest.raises(UsageError, match="candle builder"):
        await replay.fetch_candles("BTC/USDT", "5m", START)
    with pytest.raises(NotFound, match="DOGE/USDT"):
        await replay.fetch_candles("DOGE/USDT", "1m", START)


async def test_health_is_measured_while_streaming_and_after() -> None:
    replay = ReplayConnector(days=DAY, book=False)
    before = replay.health()
    assert before.connected is False and before.messages_per_s == 0.0
    seen: list[bool] = []
    async with aclosing(replay.stream()) as events:
        async for _ in events:
            seen.append(replay.health().connected)
    after = replay.health()
    assert all(seen) and after.connected is False
    assert after.messages_per_s > 0
    assert after.last_candle_at is not None
    assert int(after.last_candle_at.timestamp() * 1000) == START + 59 * MINUTE
    assert after.gaps == 0 and after.exchange == "synthetic"
    assert await replay.symbols() == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


async def test_the_loop_stays_responsive_at_max_speed() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await _take(ReplayConnector(days=0.5, yield_every=64).stream())
    finally:
        task.cancel()
    assert ticks > 10


async def test_stop_ends_a_slow_stream_promptly() -> None:
    replay = ReplayConnector(days=DAY, speed=1)  # a candle a minute
    await replay.start()
    consumer = asyncio.create_task(_take(replay.stream()))
    for _ in range(3000):  # until it streams, waiting for the next candle's time
        if replay.health().connected:
            break
        await asyncio.sleep(0.01)
    await replay.stop()
    # the next candle is due a minute away: ending well before it proves stop does not wait
    assert await asyncio.wait_for(consumer, 30.0) == []


async def test_a_stopped_replay_resumes_after_the_last_event() -> None:
    replay = ReplayConnector(days=DAY, book=False, symbols=("BTC/USDT",))
    await replay.start()
    first = await _take(replay.stream(), 10)
    await replay.stop()
    await replay.start()
    rest = await _take(replay.stream())
    opens = [_ms(c) for c in first + rest if isinstance(c, CandleClosed)]
    assert opens == [START + i * MINUTE for i in range(60)]


def _csv(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _ohlcv(rows: list[CandleRow]) -> list[str]:
    return [f"{c.open_ms},{c.open},{c.high},{c.low},{c.close},{c.volume}" for c in rows]


def _tape(rows: list[TradeRow]) -> list[str]:
    body = [f"{t.time_ms},{t.trade_id},{t.price},{t.amount},{t.side}" for t in rows]
    return ["timestamp,id,price,amount,side", *body]


async def test_replays_a_directory_of_candle_and_trade_files(tmp_path: Path) -> None:
    candles = synthetic.generate_candles("BTC/USDT", START, 10)
    holed = candles[:4] + candles[6:]  # two minutes missing
    _csv(tmp_path / "BTCUSDT-1m-2024-01.csv", _ohlcv(holed))
    tape = synthetic.generate_trades(synthetic.generate_candles("ETH/USDT", START, 3), "ETH/USDT")
    _csv(tmp_path / "ETHUSDT-trades.csv", _tape(tape))
    replay = ReplayConnector(source=tmp_path, exchange="binance-dump")
    await replay.start()
    assert await replay.symbols() == ["BTC/USDT", "ETH/USDT"]
    events = await _take(replay.stream())
    times = [
        _ms(e) + MINUTE if isinstance(e, CandleClosed) else int(e.time.timestamp() * 1000)
        for e in events
        if isinstance(e, CandleClosed | TradeExecuted)
    ]
    assert times == sorted(times)
    got = [e for e in events if isinstance(e, CandleClosed)]
    assert [_ms(c) for c in got] == [c.open_ms for c in holed]
    assert {e.exchange for e in events if isinstance(e, CandleClosed | TradeExecuted)} == {
        "binance-dump"
    }
    assert sum(isinstance(e, TradeExecuted) for e in events) == len(tape)
    assert replay.health().gaps == 1
    eth = await replay.fetch_candles("ETH/USDT", "1m", START)
    assert [round(c.volume, 9) for c in eth] == [
        round(sum(t.amount for t in tape if c.open_ms <= t.time_ms < c.open_ms + MINUTE), 9)
        for c in eth
    ]
    assert eth[0][:7] == (START, tape[0].price, eth[0].high, eth[0].low, eth[0].close,
                          eth[0].volume, eth[0].trades)  # fmt: skip
    flow = [(t.amount, t.side) for t in tape if START <= t.time_ms < START + MINUTE]
    assert eth[0].buy_volume == pytest.approx(sum(a for a, s in flow if s == "buy"))
    assert eth[0].sell_volume == pytest.approx(sum(a for a, s in flow if s == "sell"))


async def test_bad_sources_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="synthetic"):
        ReplayConnector(exchange="binance")
    with pytest.raises(NotFound, match="does not exist"):
        await ReplayConnector(source=tmp_path / "nowhere").start()
    candles = synthetic.generate_candles("BTC/USDT", START, 30)[::5]
    _csv(tmp_path / "BTCUSDT-5m.csv", _ohlcv(candles))
    with pytest.raises(UsageError, match="has no DOGE/USDT"):
        await ReplayConnector(source=tmp_path, symbols=("DOGE/USDT",)).start()
    with pytest.raises(UsageError, match="cannot give 1m"):
        await ReplayConnector(source=tmp_path, timeframes=("1m", "15m")).start()
    five = ReplayConnector(source=tmp_path, timeframes=("5m", "15m"))
    await five.start()
    assert five.base_timeframe == "5m"
    assert len(await _take(five.stream())) == len(candles)  # nothing held back as history
