"""One backoff policy: exponential, jittered by at most the base, never past the cap."""

from __future__ import annotations

from barfinex_cli.backoff import delay


def test_the_wait_doubles_per_failure_with_bounded_jitter_and_stops_at_the_cap() -> None:
    for failures, low in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)):
        waits = [delay(failures, 0.1, 5.0) for _ in range(200)]
        assert all(low <= w <= low + 0.1 for w in waits)
        assert max(waits) - min(waits) > 0.01  # jittered: clients do not retry in step
    assert all(delay(50, 0.1, 5.0) <= 5.0 for _ in range(50))
    assert delay(0, 0.1, 5.0) >= 0.1  # a first failure counted from zero waits like the first
