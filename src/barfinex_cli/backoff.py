"""One waiting policy for every loop that retries after a failure: capped, jittered exponential.

The bus's calls retry through tenacity's `AsyncRetrying` (`bus/outage.py`). Three loops cannot be
written as one retried call because they resume a stream or a queue between tries (the bus
tail, the websocket feed's reconnects, webhook deliveries); they ask `delay` how long to wait,
and `delay` is tenacity's own exponential wait plus a random one, so all of them back off alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import wait_exponential, wait_random


@dataclass(frozen=True, slots=True)
class _Attempt:
    """The one field of tenacity's retry state its wait strategies read."""

    attempt_number: int


def delay(failures: int, base_s: float, cap_s: float) -> float:
    """Return the wait after the `failures`-th failure in a row (1 is the first).

    About `base_s * 2 ** (failures - 1)`, plus up to `base_s` of jitter so that many clients do
    not retry in step, never more than `cap_s`.
    """
    wait = wait_exponential(multiplier=base_s, exp_base=2, max=cap_s) + wait_random(0, base_s)
    return min(cap_s, float(wait(_Attempt(max(failures, 1)))))  # type: ignore[arg-type]
