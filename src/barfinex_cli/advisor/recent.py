"""The advisor's recent runs, kept in memory for its REST API and MCP tools.

The audit store holds every decision for good (`bfx advisor explain` reads it); this is the short
list a running advisor answers from without a database: the last `size` runs, by the id of the
event that ended each (decision, rejection or drop), findable by that id, the signal's id or the
end of either.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from barfinex_cli.advisor.pipeline import RunResult
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.errors import NotFound


@dataclass
class Run:
    """One handled signal: the signal, the events published for it, and the pipeline's result."""

    signal: Envelope[Any]
    events: list[Envelope[Any]] = field(default_factory=list)
    result: RunResult | None = None

    @property
    def outcome_event(self) -> Envelope[Any] | None:
        return self.events[-1] if self.events else None


class RecentRuns:
    """The last `size` runs, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._by_signal: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs.values())

    def latest(self, limit: int) -> list[Run]:
        """Return the newest `limit` runs, newest first."""
        return list(self._runs.values())[-limit:][::-1]

    def add(self, run: Run) -> None:
        """Keep `run` (one that published nothing is not kept), forgetting the oldest."""
        last = run.outcome_event
        if last is None:
            return
        self._runs[last.id] = run
        self._by_signal[run.signal.id] = last.id
        while len(self._runs) > self.size:
            _, old = self._runs.popitem(last=False)
            self._by_signal.pop(old.signal.id, None)

    def find(self, ref: str) -> Run:
        """Return a run by its outcome event's id, its signal's id, or the start or end of one.

        Raises:
            NotFound: no recent run matches.
        """
        ref = ref.strip()
        if ref in self._runs:
            return self._runs[ref]
        if ref in self._by_signal:
            return self._runs[self._by_signal[ref]]
        if len(ref) >= 8:
            for run in reversed(self._runs.values()):
                ids = (run.signal.id, *(e.id for e in run.events))
                if any(i.endswith(ref) or i.startswith(ref) for i in ids):
                    return run
        raise NotFound(
            f"no recent advisor decision {ref!r} (this advisor keeps its last {self.size}; "
            "older ones: `bfx advisor explain` reads the audit store)"
        )
