"""Time-ordered event ids (UUIDv7, RFC 9562).

Ids sort by creation time, so the audit store and the bus can order by id alone. Within one
millisecond a per-process counter keeps ids from one process strictly increasing.

An outcome a role may publish again after a crash (a verdict on a decision, the announcement of
a protective order) takes a derived id instead (`derived_uuid7`): the same input and key give the
same id in any process, so the audit store (id primary key) and every consumer group (handled
ids) keep the first copy and ignore a repeat.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(now_ms: int | None = None) -> str:
    """Return a new UUIDv7 as its canonical string; monotonic within this process."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms <= _last_ms:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"  # the canonical 8-4-4-4-12 form, without building a UUID object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time_ms(value: str) -> int:
    """Return the Unix time in milliseconds carried by a UUIDv7 string."""
    return uuid.UUID(value).int >> 80


def derived_uuid7(anchor: str, key: str, rank: int = 0) -> str:
    """Return the one UUIDv7-shaped id of the outcome `key` of the event `anchor`.

    Deterministic: a role that handles `anchor` again after a crash publishes its outcome under
    the same id, which the audit store and the consumer groups already hold. The id carries the
    anchor's millisecond plus one, so it sorts after the anchor and beside it (an outcome is
    made right after its input); `rank` (0-4095) orders several outcomes of one anchor, and the
    random bits are a hash of (anchor, key). An anchor that is no UUID (made-up test ids)
    carries no time: the millisecond is 0.

    >>> derived_uuid7("0190e0a4-7c3b-7000-8000-000000000001", "inspector.verdict")[:14]
    '0190e0a4-7c3c-'
    """
    try:
        ms = uuid7_time_ms(anchor) + 1
    except ValueError:
        ms = 0
    digest = hashlib.sha256(f"{anchor}\x00{key}".encode()).digest()
    rand = int.from_bytes(digest[:8], "big") & 0x3FFF_FFFF_FFFF_FFFF
    counter = rank & 0xFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
