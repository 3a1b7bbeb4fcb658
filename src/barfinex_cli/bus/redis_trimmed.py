"""Entries a consumer group lost to the stream cap (`bus_maxlen`), found and counted.

Every XADD trims its stream to about `bus_maxlen` entries whether or not a group has read them,
so a group further behind than the cap loses the oldest entries it had not read: its next read
starts at the stream's first entry. That is seen when the group's last-delivered id is older than
the stream's first entry (XINFO STREAM `first-entry`), and counted where Redis can:
- Redis 7 keeps `entries-added` per stream and `entries-read` per group, so the entries trimmed
  unread are `entries-added - length - entries-read` at that moment. Redis goes on counting the
  group's reads from where it was, so that figure, taken whenever the group is found behind the
  first entry, is the total the group ever lost on the stream: a new loss is what exceeds the
  total recorded. Redis 7's own `lag` (`entries-added - entries-read`) counts the lost entries
  as unread too, so a group that already read past a loss shows it as `lag` minus the entries
  really after its last-delivered one: counted when that is at most `RECOUNT` entries, so a loss
  is found once the group is close to caught up again. `entries-read` is known only once the
  group has read to the end of the stream since it was made (Redis 7.0 does not set it for a
  group made at `$`); until then a loss is "some", as on 6.2.
- Redis 6.2 (the embedded server) has neither, so a loss is recorded as one occurrence of "some"
  (an occurrence per last-delivered id found behind). It may be a false alarm in one case: the
  group's last entry was the last of a trimmed node and the next one survived; the group was at
  least the cap behind then anyway. A group at `0-0` (made from the stream's start, never read)
  is not reported on 6.2: the entries trimmed before the group existed were not its to lose.
  Nor is a loss its consumers read past before a check: a burst of more than the cap within a
  second, between two reads of a consumer that was keeping up (see `CHECK_S`).
- An entry trimmed while pending on a consumer (read, not acknowledged) is counted exactly by
  the consumer that finds it gone (`record_pending`).

What was found is kept in the hash `_trimmed` under the namespace (fields `GROUP\\tTYPE\\tlost`,
`...\\tunknown`, `...\\tpending`, `...\\tat`), so every consumer of a group reports a loss once
and `bfx events lag` shows it after the consumer is gone. One Lua call per check reads each
stream's first entry and length and its groups (XINFO STREAM, XINFO GROUPS), updates the hash
and returns figures only (no entry data crosses the wire).

Over 400 lines because the Lua script, the figures it returns, the records it keeps and the
consumer's watch over them (`TrimWatch`: when to check, when to warn, how often to log) are one
piece: each part's meaning is the others' contract.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from barfinex_cli.bus.base import add_trimmed

if TYPE_CHECKING:
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

log = logging.getLogger("bfx.bus")

TRIMMED_KEY = "_trimmed"
"""Hash under the namespace: what each group lost to the cap, per stream (see module doc)."""

UNKNOWN = -1
"""A loss Redis 6.2 cannot count (`Found.lost`), or an unread count not taken (`Found.unread`)."""

CHECK_S = 1.0
"""How often a consumer checks every stream it reads for entries its group lost to the cap.

Between, it checks before a read only the streams whose last read filled its batch (the group
is behind there): a group that was caught up at its last read can lose entries only if more than
the cap came since, and a read more than `CHECK_S` after the last check checks everything."""
RECOUNT = 100
"""On Redis 7, how many unread entries a check of every stream (once per `CHECK_S`) counts at
most to find a loss the group has already read past (a burst over the cap between two reads):
see the module doc."""
COUNT_S = 10.0
"""How often a consumer counts its unread entries on one of its streams (in turn) at least
`EARLY` of the cap long, where Redis (6.2) gives no lag: entry by entry inside Redis, at most
`SCAN_NEAR` after the group's and, if there are more, about a fifth of the cap from the start."""
SCAN_NEAR = 1_000
"""Unread entries counted from the group's position before counting from the stream's start."""
EARLY = 0.8
"""The share of `bus_maxlen` unread entries at which a consumer warns that it is about to lose."""
LOG_EVERY_S = 60.0
"""A group losing on a stream again within this long is logged once, with the sum, at its end."""

TRIMMED_LUA = """
local hash, only, cap, least, now = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local small = tonumber(ARGV[5])
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local out = {}
for i = 2, #KEYS do
  local key, etype = KEYS[i], ARGV[4 + i]
  local row = {}
  if redis.call('EXISTS', key) == 1 then
    local first, length, added = nil, 0, nil
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      local f, v = info[j], info[j + 1]
      if f == 'first-entry' and v then first = v[1]
      elseif f == 'length' then length = v
      elseif f == 'entries-added' then added = v end
    end
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local name, pending, delivered, read, lag, consumers = '', 0, '0-0', nil, nil, 0
      for j = 1, #g, 2 do
        local f, v = g[j], g[j + 1]
        if f == 'name' then name = v
        elseif f == 'pending' then pending = v
        elseif f == 'consumers' then consumers = v
        elseif f == 'last-delivered-id' then delivered = v
        elseif f == 'entries-read' then read = v
        elseif f == 'lag' then lag = v end
      end
      if only == '' or name == only then
        local field = name .. '\\t' .. etype .. '\\t'
        local known = tonumber(redis.call('HGET', hash, field .. 'lost') or '0')
        local behind = first ~= nil and older(delivered, first)
        local counted = type(added) == 'number' and type(read) == 'number'
        local new, total, ahead = 0, known, -1
        if behind and counted then
          total = added - length - read
        elseif counted and type(lag) == 'number' and lag > known and small > 0 then
          local most = math.min(lag - known, small)
          ahead = #redis.call('XRANGE', key, '(' .. delivered, '+', 'COUNT', most)
          if ahead < most then
            total = lag - ahead  -- every entry after the group's is counted: the rest is lost
          else
            ahead = -1  -- too many to count: a loss among them waits for a later check
          end
        end
        if total > known then
          new = total - known
          known = total
          redis.call('HSET', hash, field .. 'lost', known, field .. 'at', now)
        elseif not counted and behind and delivered ~= '0-0'
            and redis.call('HGET', hash, field .. 'last') ~= delivered then
          new = -1
          redis.call('HINCRBY', hash, field .. 'unknown', 1)
          redis.call('HSET', hash, field .. 'last', delivered, field .. 'at', now)
        end
        local unread, scanned = -1, 0
        if behind then
          unread = length
        elseif ahead >= 0 then
          unread = ahead
        elseif counted and type(lag) == 'number' then
          unread = math.max(0, math.min(length, lag - known))
        elseif cap > 0 and length >= least then
          scanned = 1
          unread = #redis.call('XRANGE', key, '(' .. delivered, '+', 'COUNT', cap)
          if unread >= cap then  -- many: count the entries up to the group's from the start
            local limit = length - least + 1
            unread = -1
            if least > 0 and limit > 0 then
              local head = #redis.call('XRANGE', key, '-', delivered, 'COUNT', limit)
              if head < limit then unread = length - head end
            end
          end
        end
        table.insert(row, {name, consumers, pending, unread, new, scanned})
      end
    end
  end
  out[i - 1] = row
end
return out
"""
"""KEYS: the `_trimmed` hash, then stream keys. ARGV: the group to check ('' for every group),
how many unread entries to count at most where Redis does not give the group's lag (0: none),
the least stream length worth counting them on (where more are unread, the entries up to the
group's are counted from the stream's start, at most length - least + 1: so a count costs at
most that plus the first figure, and tells whether at least `least` are unread), the time (ms)
to record, the largest backlog to count on Redis 7 for a loss read past (`RECOUNT`), then each
stream's type. Returns per
stream key {{group, consumers, pending, unread or -1, entries newly lost (-1: some, not
counted), 1 if unread was counted entry by entry}, ...}."""


@dataclass(frozen=True, slots=True)
class Found:
    """One group on one stream, as a check found it."""

    group: str
    type: str
    consumers: int
    pending: int
    unread: int
    """Entries after the group's last-delivered one; `UNKNOWN` when not counted."""
    lost: int
    """Entries this check found newly trimmed unread: 0, a count, or `UNKNOWN` (Redis 6.2)."""
    scanned: bool = False
    """`unread` was counted entry by entry (no lag from Redis): a read of as many entries."""


@dataclass(frozen=True, slots=True)
class Lost:
    """What a group lost to the cap on one stream, over the namespace's life (`_trimmed`)."""

    unread: int = 0
    """Entries trimmed before the group read them, as counted on Redis 7."""
    unknown: int = 0
    """Times the group fell behind the stream's first entry where Redis (6.2) could not count."""
    pending: int = 0
    """Entries trimmed while pending (read, not yet acknowledged): never handled."""
    at: datetime | None = None
    """When the latest loss was found."""

    @property
    def entries(self) -> int:
        """Return the entries known lost (unread and pending)."""
        return self.unread + self.pending

    def describe(self) -> str:
        """Return the loss as one word or number: `0`, `12`, `some`, `12+`."""
        if self.unknown:
            return f"{self.entries}+" if self.entries else "some"
        return str(self.entries)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


async def check(
    bus: RedisStreamsBus,
    group: str,
    types: list[str],
    *,
    count_up_to: int = 0,
    least_length: int = 0,
    recount: int = RECOUNT,
) -> list[Found]:
    """Check `group` (or every group, with '') on the streams of `types`; record what it lost.

    Where Redis gives no usable lag (6.2), up to `count_up_to` unread entries are counted on a
    stream at least `least_length` long: a read of that many entries inside Redis, so callers
    that check often count rarely.
    """
    if not types:
        return []
    script = bus.redis.register_script(TRIMMED_LUA)  # EVALSHA, loaded again on NOSCRIPT
    keys = [bus.prefix + TRIMMED_KEY, *(bus.key(t) for t in types)]
    args: list[Any] = [group, count_up_to, least_length, _now_ms(), recount, *types]
    reply: Any = await script(keys=keys, args=args)
    out: list[Found] = []
    for event_type, rows in zip(types, reply, strict=True):
        for name, consumers, pending, unread, lost, scanned in rows or []:
            out.append(
                Found(
                    _text(name),
                    event_type,
                    int(consumers),
                    int(pending),
                    int(unread),
                    int(lost),
                    bool(scanned),
                )
            )
    return out


async def record_pending(bus: RedisStreamsBus, group: str, event_type: str, count: int) -> None:
    """Record `count` entries of `event_type` trimmed while pending on `group`."""
    field = f"{group}\t{event_type}\t"
    pipe = bus.redis.pipeline(transaction=False)
    pipe.hincrby(bus.prefix + TRIMMED_KEY, field + "pending", count)
    pipe.hset(bus.prefix + TRIMMED_KEY, field + "at", _now_ms())
    await pipe.execute()


async def recorded(bus: RedisStreamsBus) -> dict[tuple[str, str], Lost]:
    """Return what every group lost to the cap, by (group, type)."""
    raw: Any = await bus.redis.hgetall(bus.prefix + TRIMMED_KEY)
    fields: dict[tuple[str, str], dict[str, str]] = {}
    for key, value in (raw or {}).items():
        group, event_type, name = _text(key).rsplit("\t", 2)
        fields.setdefault((group, event_type), {})[name] = _text(value)
    out: dict[tuple[str, str], Lost] = {}
    for where, f in fields.items():
        at = f.get("at")
        out[where] = Lost(
            unread=int(f.get("lost", 0)),
            unknown=int(f.get("unknown", 0)),
            pending=int(f.get("pending", 0)),
            at=datetime.fromtimestamp(int(at) / 1000, UTC) if at else None,
        )
    return out


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group on a stream for `bfx events lag`: its backlog and what it lost to the cap."""

    group: str
    type: str
    consumers: int
    pending: int
    """Entries delivered to a consumer and not yet acknowledged."""
    unread: int
    """Entries after the group's last-delivered one; `UNKNOWN` for a group no longer there."""
    lost: Lost


async def lags(bus: RedisStreamsBus) -> list[GroupLag]:
    """Return every group on every stream of the namespace, and what each lost to the cap.

    Also records a loss it finds (as a consumer's check would). Unread entries are counted
    exactly: on Redis 7 from the group's lag, otherwise by reading their ids inside Redis,
    one stream per call. Groups that lost entries on a stream and are gone are listed too.
    """
    rows: list[GroupLag] = []
    found: list[Found] = []
    for event_type in await bus._stream_types():
        everything = 2**31 - 1
        found.extend(await check(bus, "", [event_type], count_up_to=everything, recount=everything))
    lost = await recorded(bus)
    for f in found:
        where = (f.group, f.type)
        rows.append(
            GroupLag(f.group, f.type, f.consumers, f.pending, f.unread, lost.pop(where, Lost()))
        )
    for (group, event_type), gone in lost.items():
        rows.append(GroupLag(group, event_type, 0, 0, UNKNOWN, gone))
    return sorted(rows, key=lambda r: (r.group, r.type))


WHERE = {
    "unread": "trimmed before the group read them",
    "pending": "trimmed while pending on a consumer, before it handled them",
    "both": "trimmed before the group handled them",
}


class TrimWatch:
    """A consumer's watch on its group: warn early, and once per loss to the cap, with counts.

    `RedisConsumer` calls `watch` before each read of new entries (see `CHECK_S` for which
    streams it checks), `read` after it, and `pending` when entries pending on it were trimmed.
    A group whose unread entries pass `EARLY` of the cap is warned about once, until they drop
    under half of that again; every loss is logged as a WARNING naming the group, the stream and
    the count, at most once per `LOG_EVERY_S` per stream: a loss found sooner after the last
    line is held and logged, summed with any that follow, once that time has passed.
    """

    def __init__(self, bus: RedisStreamsBus, group: str) -> None:
        self.bus = bus
        self.group = group
        self.lost = 0
        """Entries this consumer found its group lost to the cap (counted ones)."""
        self.lost_uncounted = 0
        """Losses it found that Redis (6.2) could not count."""
        self._checked = 0.0
        self._scanned = 0.0
        self._turn = -1  # which of its streams Redis 6.2 had counted last (`COUNT_S`)
        self._full: set[str] = set()  # types whose last read filled its batch
        self._near: set[str] = set()  # types past the early warning, not yet back under half
        self._quiet_until: dict[str, float] = {}
        self._held: dict[str, tuple[int, int, str]] = {}  # type -> entries, uncounted, where
        self._failed = False  # a failed check was logged

    @property
    def threshold(self) -> int:
        """Return the unread entries at which the early warning is given."""
        return max(1, int(self.bus.maxlen * EARLY))

    def read(self, count: int, reply: Any) -> None:
        """Note which streams an XREADGROUP reply of at most `count` entries each filled."""
        skip = len(self.bus.prefix)
        self._full = {_text(key)[skip:] for key, entries in reply or [] if len(entries) >= count}

    async def watch(self, types: Collection[str]) -> list[Found]:
        """Check the group on `types` as `CHECK_S` says, before a read; log what it found."""
        now = time.monotonic()
        self._flush(now)
        every = now - self._checked >= CHECK_S
        if every:
            self._checked = now
        else:
            types = [t for t in types if t in self._full]
        if not types:
            return []
        threshold = self.threshold
        try:
            found = await check(
                self.bus, self.group, sorted(types), recount=RECOUNT if every else 0
            )
            unknown = sorted({f.type for f in found if f.unread == UNKNOWN})
            if unknown and now - self._scanned >= COUNT_S:  # Redis 6.2: count one stream
                self._turn += 1
                scanned = unknown[self._turn % len(unknown)]
                counted = await check(
                    self.bus,
                    self.group,
                    [scanned],
                    count_up_to=SCAN_NEAR,
                    least_length=threshold,
                    recount=0,
                )
                found = [f for f in found if f.type != scanned] + counted
                if any(f.scanned for f in counted):  # long enough to be counted: it was
                    self._scanned = now
        except ResponseError as exc:  # a watch that fails must not stop the reads it guards
            if not self._failed:
                self._failed = True
                log.warning(
                    "could not check consumer group %s for entries lost to the stream cap: %s",
                    self.group,
                    exc,
                    extra={"group": self.group},
                )
            return []
        for f in found:
            if f.lost:
                self._near.add(f.type)  # lost already: no "about to" after the fact
                self._note(f.type, max(f.lost, 0), int(f.lost == UNKNOWN), "unread")
            elif f.unread >= threshold and f.type not in self._near:
                self._near.add(f.type)
                log.warning(
                    "consumer group %s is %d entries behind on %s, %d%% of the stream cap "
                    "(bus_maxlen %d): once it is the cap behind, entries it has not read are "
                    "trimmed and lost; speed it up or raise bus_maxlen",
                    self.group,
                    f.unread,
                    f.type,
                    round(100 * f.unread / self.bus.maxlen),
                    self.bus.maxlen,
                    extra={"group": self.group, "type": f.type, "unread": f.unread},
                )
            elif 0 <= f.unread < threshold // 2:
                self._near.discard(f.type)
        return found

    async def pending(self, event_type: str, count: int) -> None:
        """Record and log `count` entries of `event_type` trimmed while pending on the group."""
        await record_pending(self.bus, self.group, event_type, count)
        self._note(event_type, count, 0, "pending")

    def _note(self, event_type: str, entries: int, uncounted: int, where: str) -> None:
        self.lost += entries
        self.lost_uncounted += uncounted
        add_trimmed(self.bus.trimmed, self.group, event_type, entries, uncounted)
        held = self._held.get(event_type)
        if held is not None:
            entries, uncounted = entries + held[0], uncounted + held[1]
            where = where if where == held[2] else "both"
        self._held[event_type] = (entries, uncounted, where)
        self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        """Log the held losses of every stream whose quiet time has passed."""
        for event_type, (entries, uncounted, where) in list(self._held.items()):
            if now < self._quiet_until.get(event_type, 0.0):
                continue
            del self._held[event_type]
            self._quiet_until[event_type] = now + LOG_EVERY_S
            what = str(entries) if entries else "some"
            if entries and uncounted:
                what += " and more, uncounted,"
            log.warning(
                "consumer group %s lost %s entries of %s to the stream cap (bus_maxlen %d): %s; "
                "speed it up or raise bus_maxlen (`bfx events lag` shows every group's losses)",
                self.group,
                what,
                event_type,
                self.bus.maxlen,
                WHERE[where],
                extra={"group": self.group, "type": event_type, "lost": entries or "some"},
            )
