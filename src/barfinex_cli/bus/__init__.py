"""The event bus: one protocol, two implementations with the same observable semantics.

`redis_streams.RedisStreamsBus` is the production transport (one stream per event type, consumer
groups, acks, reclaim of a dead consumer's pending entries); `memory.MemoryBus` is its complete
in-process twin, used by the backtest and `bfx up --single-process`. Nothing heavy is imported here.
"""
