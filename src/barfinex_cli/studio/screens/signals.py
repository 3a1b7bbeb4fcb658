"""Screen 2, Signals: the timeline of detector signals per strategy, and why each one fired.

The top lines are one timeline per strategy instance (▲ long, ▼ short, oldest to newest); the
table lists the signals oldest first and follows the newest (it grows at the end, so a burst
appends rows instead of redrawing the table); the highlighted signal's per-rule attribution
(held or not, weight, direction, the values the rule saw) and its score against the threshold
show beneath.
Enter posts `ChartRequested`, and the app shows that signal on the Market chart.

The gateway keeps no signal history, so the screen holds the signals seen since the studio
connected (up to `state.MAX_SIGNALS`), and says so.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.studio.screens.base import Row, StudioScreen, matches, sync_rows, table
from barfinex_cli.studio.state import StudioState

MAX_ROWS = 200
TIMELINE_MARKS = 60


def _mark(direction: str) -> Text:
    return Text("▲", style="green") if direction == "long" else Text("▼", style="red")


class SignalsScreen(StudioScreen):
    """Detector signals and their rule attribution."""

    DEFAULT_CSS = """
    SignalsScreen #timelines { height: auto; max-height: 8; padding: 0 1; }
    SignalsScreen #signals { height: 1fr; }
    SignalsScreen #why { height: auto; max-height: 14; border-top: solid $accent; }
    SignalsScreen #score { height: auto; padding: 0 1; }
    SignalsScreen #rules { height: auto; max-height: 12; }
    """
    MODE = "signals"
    SECTIONS = ("signals",)
    ROLES = ("detector",)

    class ChartRequested(Message):
        """The user asked to see a signal on the Market chart."""

        def __init__(self, signal: Envelope[SignalGenerated]) -> None:
            super().__init__()
            self.signal = signal

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, Envelope[SignalGenerated]] = {}

    def compose_body(self) -> ComposeResult:
        yield Static("", id="timelines")
        yield table(
            "signals",
            "candle",
            "strategy",
            "instance",
            "symbol",
            "tf",
            "dir",
            "score",
            "threshold",
        )
        with Vertical(id="why"):
            yield Static("", id="score")
            yield table("rules", "rule", "held", "weight", "argues", "values", cursor="none")

    def missing_hint(self, missing: list[str]) -> str:
        return "no detector is running, so no signals arrive (`bfx detector run STRATEGY`)"

    def draw(self, state: StudioState) -> None:
        signals = list(state.signals)
        self._draw_timelines(signals)
        table = self.query_one("#signals", DataTable)
        current = self._current_key(table)
        at_end = table.row_count == 0 or table.cursor_row >= table.row_count - 1
        rows: list[Row] = []
        self._shown = {}
        for event in reversed(signals):  # newest first while counting, shown oldest first
            s = event.payload
            cells = (
                s.candle_time.strftime("%Y-%m-%d %H:%M"), s.strategy, s.instance, s.symbol,
                s.timeframe, s.direction, f"{s.score:.2f}", f"{s.threshold:.2f}",
            )  # fmt: skip
            if not matches(self.filter_text, cells):
                continue
            rows.append((event.id, (*cells[:5], _mark(s.direction) + f" {s.direction}",
                                    *cells[6:])))  # fmt: skip
            self._shown[event.id] = event
            if len(rows) >= MAX_ROWS:
                break
        rows.reverse()
        sync_rows(table, rows)
        if rows and (at_end or current not in self._shown):
            table.move_cursor(row=table.row_count - 1)  # follow the newest signal
        elif current in self._shown:
            table.move_cursor(row=table.get_row_index(current))
        self._explain(self._current_key(table))

    def _draw_timelines(self, signals: list[Envelope[SignalGenerated]]) -> None:
        by_strategy: dict[str, list[SignalGenerated]] = defaultdict(list)
        for event in signals:
            by_strategy[f"{event.payload.strategy}/{event.payload.instance}"].append(event.payload)
        if not by_strategy:
            text = Text(
                "No signals yet — they appear as detectors emit them (the gateway keeps no "
                "signal history; the studio shows those since it connected).",
                style="dim",
            )
        else:
            text = Text()
            width = max(len(k) for k in by_strategy)
            for name, items in sorted(by_strategy.items()):
                text.append(f"{name:<{width}}  ")
                for s in items[-TIMELINE_MARKS:]:
                    text.append_text(_mark(s.direction))
                last = items[-1]
                text.append(
                    f"  {len(items)} · last {last.candle_time:%H:%M} {last.direction} "
                    f"{last.symbol}\n"
                )
            text.rstrip()
        self.query_one("#timelines", Static).update(text)

    @staticmethod
    def _current_key(table: DataTable[Any]) -> str | None:
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "signals":
            self._explain(str(event.row_key.value) if event.row_key.value else None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "signals" and event.row_key.value in self._shown:
            self.post_message(self.ChartRequested(self._shown[str(event.row_key.value)]))

    def _explain(self, key: str | None) -> None:
        rules = self.query_one("#rules", DataTable)
        rules.clear()
        score = self.query_one("#score", Static)
        event = self._shown.get(key or "")
        if event is None:
            score.update(Text("Highlight a signal to see its rules; Enter shows it on the chart.",
                              style="dim"))  # fmt: skip
            return
        s = event.payload
        crossed = s.score >= s.threshold
        at = f"{s.candle_time:%Y-%m-%d %H:%M}"
        line = Text(f"{s.strategy} {s.direction} {s.symbol} {s.timeframe} at {at}  ")
        line.append(f"score {s.score:.2f} vs threshold {s.threshold:.2f}",
                    style="bold green" if crossed else "bold yellow")  # fmt: skip
        line.append(f"  ({s.action})")
        score.update(line)
        for rule in s.attribution:
            values = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in rule.values.items()
            )
            rules.add_row(
                rule.rule, Text("✓", style="green") if rule.held else Text("✗", style="red"),
                f"{rule.weight:g}", rule.direction or "filter", values,
            )  # fmt: skip
