"""The replay refuses a history that would swallow the whole replay, instead of playing nothing."""

from __future__ import annotations

import pytest

from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.errors import UsageError
from barfinex_cli.provider.connectors.replay import ReplayConnector

HOUR = 1 / 24


async def test_a_history_as_long_as_the_replay_is_refused_with_the_fix() -> None:
    replay = ReplayConnector(days=HOUR, skip=60, book=False)
    with pytest.raises(UsageError, match=r"60 candle opens.*--history 60.*lower --history"):
        await replay.start()


async def test_a_history_one_candle_shorter_than_the_replay_plays_that_candle() -> None:
    replay = ReplayConnector(days=HOUR, skip=59, book=False)
    await replay.start()
    played = [event async for event in replay.stream() if isinstance(event, CandleClosed)]
    assert len(played) == len(replay.candle_symbols) == 3
