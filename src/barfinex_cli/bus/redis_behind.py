"""Which consumer groups on a namespace's Redis streams have not finished: `RedisStreamsBus.behind`.

A group is behind on a stream when it holds entries unacknowledged (XINFO GROUPS `pending`) or
its last-delivered id is older than the stream's newest entry (it was not given them yet). The
second is read from XINFO STREAM's `last-entry` rather than XINFO GROUPS `lag`, which Redis 6.2
(the embedded server) lacks and Redis 7 leaves empty after trimming. One Lua call reads every
stream's newest id, each group's pending count and last-delivered id and its consumers' idle
times, and returns only those figures (no entry data crosses the wire).

Two more cases count as behind, or a stack would look done while it is not:
- a group a role joined (its patterns are kept in the `_groups` hash as it joins) that has not
  made its group on a stream matching them yet: a consumer looks for new streams once a second,
  so the first `order.filled` of a run sits on a stream nobody reads for up to a second;
- only groups of running roles are waited for: a group whose consumers all stayed idle longer
  than `active_s` belongs to a role that is gone (an earlier run on the same namespace).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from barfinex_cli.bus.base import entry_id_key, matches

if TYPE_CHECKING:
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

ACTIVE_S = 60.0
"""A group whose consumers all stayed idle longer than this is not waited for."""

GROUPS_KEY = "_groups"
"""Hash under the namespace: group name -> JSON list of the type patterns it reads."""

BEHIND_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local row = {'', {}}
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      if info[j] == 'last-entry' and info[j + 1] then row[1] = info[j + 1][1] end
    end
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local name, pending, delivered = '', 0, '0-0'
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1]
        elseif g[j] == 'pending' then pending = g[j + 1]
        elseif g[j] == 'last-delivered-id' then delivered = g[j + 1] end
      end
      local idle = -1
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, name)) do
        for j = 1, #c, 2 do
          if c[j] == 'idle' and (idle < 0 or c[j + 1] < idle) then idle = c[j + 1] end
        end
      end
      table.insert(row[2], {name, pending, delivered, idle})
    end
  end
  out[i] = row
end
return out
"""
"""KEYS: stream keys. Returns per key {newest entry id or '', {{group, pending, last-delivered
id, the least idle ms of its consumers or -1}, ...}}."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def register(bus: RedisStreamsBus, group: str, types: Collection[str]) -> None:
    """Record that `group` reads `types` (patterns), so `behind` knows to wait for it.

    The bus remembers it too, and writes its groups again after an outage (`register_again`).
    """
    bus.groups[group] = json.dumps(sorted(types))
    await bus.redis.hset(bus.prefix + GROUPS_KEY, group, bus.groups[group])


async def register_again(bus: RedisStreamsBus) -> None:
    """Write every group this bus registered again: Redis may have restarted without them.

    A consumer registers again at its next read after an outage, but a role may be waiting out
    its backoff then; the publisher's first call after the outage must not find a run's end
    (`behind`) blind to the groups in between.
    """
    if bus.groups:
        groups: dict[Any, Any] = dict(bus.groups)  # redis-py's mapping type is invariant
        await bus.redis.hset(bus.prefix + GROUPS_KEY, mapping=groups)


async def behind(
    bus: RedisStreamsBus,
    ignore: Collection[str] = (),
    limit: int | None = None,
    active_s: float = ACTIVE_S,
) -> list[tuple[str, str]]:
    """Return (group, type) pairs of running roles' groups that have not finished a stream."""
    pipe = bus.redis.pipeline(transaction=False)
    pipe.smembers(bus.types_key)
    pipe.hgetall(bus.prefix + GROUPS_KEY)
    members, registered = await pipe.execute()
    types = sorted(t for t in (_text(m) for m in members) if not t.startswith("_"))
    if not types:
        return []
    script = bus.redis.register_script(BEHIND_LUA)  # EVALSHA, loaded again on NOSCRIPT
    reply: Any = await script(keys=[bus.key(t) for t in types])
    patterns = {_text(g): tuple(json.loads(_text(p))) for g, p in (registered or {}).items()}
    rows: list[tuple[str, str, list[tuple[str, int, str, int]]]] = []
    idle: dict[str, int] = {}
    for event_type, (newest, groups) in zip(types, reply, strict=True):
        parsed = [(_text(g[0]), int(g[1]), _text(g[2]), int(g[3])) for g in groups]
        rows.append((event_type, _text(newest), parsed))
        for name, _, _, least in parsed:
            if least >= 0:
                idle[name] = min(idle.get(name, least), least)
    active_ms = active_s * 1000

    def watched(group: str) -> bool:
        if group in ignore:
            return False
        if group in idle:
            return idle[group] <= active_ms
        return group in patterns  # joined, and not read yet: it is about to

    out: list[tuple[str, str]] = []
    for event_type, newest, groups in rows:
        if not newest:
            continue
        last = entry_id_key(newest)
        present = set()
        for name, pending, delivered, _ in groups:
            present.add(name)
            if watched(name) and (pending > 0 or entry_id_key(delivered) < last):
                out.append((name, event_type))
        for name, reads in patterns.items():
            if name not in present and watched(name) and matches(event_type, reads):
                out.append((name, event_type))  # a new stream its consumer has not joined yet
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out
