"""How far ahead a candle may be dated before it is refused as coming from the future.

One candle dated far ahead (a bad clock at the exchange, a typo in a replay file, a year 2100
row) is worse than a missing one: every consumer that keeps "the newest candle so far" would
then take each real candle after it for an old one and stop. The provider refuses such a candle
at the door (with an incident) and a detector refuses it again on its own, both by this rule:

- live, a closed candle cannot close after now: it may close at most `LIVE_TIMEFRAMES` of its
  timeframes past the wall clock (clock skew), or `max_ahead_s` when configured;
- in a replay there is no "now" but the data: a candle may close at most
  `max(REPLAY_MIN_MS, REPLAY_TIMEFRAMES timeframes)` past the last close of its series (weekends,
  holidays and exchange outages are shorter), or `max_ahead_s` when configured.

The rule lives in `market` because both the provider and the detector apply it and neither may
import the other.
"""

from __future__ import annotations

LIVE_TIMEFRAMES = 3
"""Live: how many of its timeframes a candle may close past the wall clock."""

REPLAY_MIN_MS = 30 * 86_400_000
"""Replay: the smallest jump past the series' last close that counts as too far (30 days)."""

REPLAY_TIMEFRAMES = 100
"""Replay: the jump, in timeframes of the series, that counts as too far when that is longer."""


def max_ahead_ms(tf_ms: int, *, live: bool, max_ahead_s: float | None = None) -> int:
    """Return how far past its reference a candle of timeframe `tf_ms` may close.

    Args:
        tf_ms: The candle's timeframe in milliseconds.
        live: Whether the reference is the wall clock (a live feed) or the series (a replay).
        max_ahead_s: A configured bound in seconds; None applies the defaults above.
    """
    if max_ahead_s is not None:
        return int(max_ahead_s * 1000)
    if live:
        return LIVE_TIMEFRAMES * tf_ms
    return max(REPLAY_MIN_MS, REPLAY_TIMEFRAMES * tf_ms)


def too_far_ahead(
    close_ms: int,
    reference_ms: int | None,
    tf_ms: int,
    *,
    live: bool,
    max_ahead_s: float | None = None,
) -> str | None:
    """Return why a candle closing at `close_ms` is refused, or None if it may pass.

    `reference_ms` is the wall clock (live) or the last close of the series (replay); with no
    reference yet (the first candle of a replay) nothing can be judged and the candle passes.
    """
    if reference_ms is None or reference_ms <= 0:
        return None
    limit = max_ahead_ms(tf_ms, live=live, max_ahead_s=max_ahead_s)
    ahead = close_ms - reference_ms
    if ahead <= limit:
        return None
    what = "the wall clock" if live else "the last close of its series"
    return (
        f"closes {_span(ahead)} past {what}; at most {_span(limit)} is accepted "
        "(max_candle_ahead_s in [provider])"
    )


def _span(ms: int) -> str:
    seconds = ms / 1000
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
