"""Look inside a role's memory during `benchmarks/load.py`: tracemalloc snapshots over time.

Nothing here is product code. `load.py --trace inspector,provider --trace-dir DIR` writes a
`sitecustomize.py` into DIR and puts DIR first on the PYTHONPATH of `bfx up`; every Python
process it starts runs that file, and the role processes named (matched on their command line,
`barfinex_cli inspector run`, ...) call `install_if_named()`: a daemon thread that waits `after`
seconds (past the role's start-up, which tracing would slow enough for the other roles to give up
on the provider), calls `tracemalloc.start(frames)`, then every `interval` seconds writes

- `DIR/{role}-{pid}-{n:03}.snap`: a tracemalloc snapshot (`Snapshot.load`),
- a line of `DIR/{role}-{pid}.jsonl`: seconds since start, VmRSS, the bytes tracemalloc traces
  (live Python allocations) and their peak since the previous line (transient allocations, such
  as a large response parsed and dropped, raise it and with it the heap's high-water mark), its
  own overhead, the number of objects the GC tracks.

Only allocations made after tracing began are traced: what the steady state adds and keeps.
RSS growth beside a flat traced size is the allocator (glibc arenas, fragmentation) or memory
outside Python's allocator; traced growth is live Python objects, and

    python benchmarks/memtrace.py DIR ROLE [--first N] [--top 25] [--frames 6]

prints what grew between the snapshot N (default: the second, past warm-up) and the last: the
lines that allocated the growth, then the biggest growing tracebacks.

tracemalloc slows the process it traces (every allocation records its traceback) and adds its
own memory to RSS; compare RSS drifts from runs without it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

ROLE_COMMANDS = {
    "recorder": "events record", "provider": "provider start", "detector": "detector run",
    "advisor": "advisor run", "inspector": "inspector run",
}  # fmt: skip

SITECUSTOMIZE = """\
import importlib.util as _u
_spec = _u.spec_from_file_location("_bfx_memtrace", {module!r})
_mod = _u.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
_mod.install_if_named({roles!r}, {folder!r}, frames={frames}, interval={interval}, after={after})
"""


def write_sitecustomize(
    folder: Path, roles: list[str], frames: int, interval: float, after: float
) -> None:
    """Write the `sitecustomize.py` that makes the named roles' processes trace themselves."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(
            module=str(Path(__file__).resolve()),
            roles=roles,
            folder=str(folder),
            frames=frames,
            interval=interval,
            after=after,
        )
    )


def _role_of_this_process(roles: list[str]) -> str | None:
    try:
        argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    line = " ".join(a.decode(errors="replace") for a in argv)
    for role in roles:
        if f"barfinex_cli {ROLE_COMMANDS[role]}" in line:
            return role
    return None


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def install_if_named(
    roles: list[str], folder: str, *, frames: int, interval: float, after: float
) -> None:
    """Start tracing when this process is one of `roles`; do nothing otherwise."""
    role = _role_of_this_process(roles)
    if role is None:
        return
    out = Path(folder)
    pid = os.getpid()
    began = time.monotonic()
    count = [0]
    lock = threading.Lock()

    def dump() -> None:
        with lock:
            snapshot = tracemalloc.take_snapshot()
            snapshot.dump(str(out / f"{role}-{pid}-{count[0]:03}.snap"))
            traced, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            row = {
                "n": count[0], "t_s": round(time.monotonic() - began, 1), "rss_kib": _rss_kib(),
                "traced_kib": traced // 1024,
                "peak_kib": peak // 1024,
                "tracemalloc_kib": tracemalloc.get_tracemalloc_memory() // 1024,
                "gc_objects": len(gc.get_objects()),
            }  # fmt: skip
            with (out / f"{role}-{pid}.jsonl").open("a") as log:
                log.write(json.dumps(row) + "\n")
            count[0] += 1

    def every() -> None:
        time.sleep(after)  # pacing in a daemon thread, not a wait for a condition
        tracemalloc.start(frames)
        dump()
        while True:
            time.sleep(interval)
            dump()

    def at_exit() -> None:
        if tracemalloc.is_tracing():
            dump()

    threading.Thread(target=every, name="bfx-memtrace", daemon=True).start()
    import atexit

    atexit.register(at_exit)


def _noise(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<unknown>"),
        )
    )


def compare(folder: Path, role: str, first: int, top: int, frames: int) -> None:
    """Print what grew in `role`'s snapshots between snapshot `first` and the last one."""
    snaps = sorted(folder.glob(f"{role}-*.snap"))
    if len(snaps) < 2:
        raise SystemExit(f"fewer than two snapshots of {role} in {folder}")
    for log in sorted(folder.glob(f"{role}-*.jsonl")):
        print(f"== {log.name}")
        for line in log.read_text().splitlines():
            row = json.loads(line)
            print(
                f"  #{row['n']:<3} t={row['t_s']:>6}s rss={row['rss_kib'] / 1024:7.1f} MiB "
                f"traced={row['traced_kib'] / 1024:7.1f} MiB "
                f"peak={row.get('peak_kib', 0) / 1024:7.1f} MiB "
                f"tracemalloc={row['tracemalloc_kib'] / 1024:6.1f} MiB objects={row['gc_objects']}"
            )
    a_path, b_path = snaps[min(first, len(snaps) - 2)], snaps[-1]
    a = _noise(tracemalloc.Snapshot.load(str(a_path)))
    b = _noise(tracemalloc.Snapshot.load(str(b_path)))
    print(f"== growth {a_path.name} -> {b_path.name}, by line")
    for stat in b.compare_to(a, "lineno")[:top]:
        print(
            f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8} blocks  {stat.traceback[0]}"
        )
    print(f"== growth by traceback (top {min(top, 10)})")
    for stat in b.compare_to(a, "traceback")[: min(top, 10)]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+8} blocks")
        for frame in stat.traceback.format(limit=frames, most_recent_first=True):
            print(f"      {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path)
    parser.add_argument("role", choices=sorted(ROLE_COMMANDS))
    parser.add_argument("--first", type=int, default=1, help="the snapshot to compare from")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=6, help="frames shown per traceback")
    args = parser.parse_args()
    compare(args.folder, args.role, args.first, args.top, args.frames)


if __name__ == "__main__":
    main()
