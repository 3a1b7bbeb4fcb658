"""The base of the studio's six screens: header, the roles it misses, a body, filter and footer.

A screen only displays `app.state`. The app posts `StudioScreen.StateChanged` to the screen on
show after every batch of live events or snapshot; the message is replaceable, so a burst
collapses into one redraw. `refresh_view` redraws only when a section the screen draws
(`SECTIONS`) has moved since its last drawing, then calls `draw`. A subclass sets `MODE`,
`SECTIONS` and `ROLES` (the roles whose absence it names), composes its body in `compose_body`
and draws in `draw`; `filter_text` holds what `/` typed (empty: no filter).

The Market screen (screens/market.py) subclasses this too; it receives the Signals screen's
`ChartRequested` through `show_signal` (see `studio.app`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from barfinex_cli.studio.header import StudioHeader
from barfinex_cli.studio.state import StudioState

if TYPE_CHECKING:
    from barfinex_cli.studio.app import StudioApp


def table(table_id: str, *columns: str, cursor: str = "row") -> DataTable[Any]:
    """Return a table with its columns, ready to yield from `compose_body`."""
    made: DataTable[Any] = DataTable(
        id=table_id,
        cursor_type=cursor,  # type: ignore[arg-type]
        zebra_stripes=cursor == "row",
    )
    made.add_columns(*columns)
    return made


Row = tuple[str, tuple[object, ...]]
"""A table row: its key and its cells."""


def sync_rows(grid: DataTable[Any], rows: list[Row]) -> None:
    """Show `rows` (oldest first) in `grid`, touching only what changed when it can.

    A live log mostly grows at the end and loses rows at the front: those are appended and
    removed one by one, so the rows already shown are not measured and drawn again (a rebuild
    of a few hundred rows on every batch was the studio's main cost under a burst). Anything
    else (a new filter, a reordering) rebuilds the table.
    """
    keys = [key for key, _ in rows]
    have = [str(row.key.value) for row in grid.ordered_rows]
    if keys and have and keys[0] in have:
        cut = have.index(keys[0])  # rows before it left the window
        kept = have[cut:]
        if keys[: len(kept)] == kept:
            for gone in have[:cut]:
                grid.remove_row(gone)
            for key, cells in rows[len(kept) :]:
                grid.add_row(*cells, key=key)
            return
    grid.clear()
    for key, cells in rows:
        grid.add_row(*cells, key=key)


def matches(filter_text: str, cells: Iterable[object]) -> bool:
    """Tell whether a row's cells contain the filter (case-insensitive); an empty one matches."""
    if not filter_text:
        return True
    needle = filter_text.lower()
    return any(needle in str(c).lower() for c in cells)


class StudioScreen(Screen[None]):
    """One of the studio's screens."""

    DEFAULT_CSS = """
    StudioScreen #missing { height: auto; color: $warning; padding: 0 1; }
    StudioScreen #missing.-none { display: none; }
    StudioScreen #filter { dock: bottom; display: none; }
    StudioScreen #filter.-shown { display: block; }
    """
    BINDINGS = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    MODE = ""
    REDRAW_S = 0.25
    """The shortest time between two redraws of the body."""
    SECTIONS: tuple[str, ...] = ()
    ROLES: tuple[str, ...] = ()

    class StateChanged(Message):
        """The studio's state moved; only the latest of a burst matters."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, StudioScreen.StateChanged)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filter_text = ""
        self._drawn: dict[str, int] = {}
        self._last_draw = 0.0
        self._redraw_timer: Timer | None = None

    @property
    def studio(self) -> StudioApp:
        """The app, typed."""
        return cast("StudioApp", self.app)

    @property
    def state(self) -> StudioState:
        """What the studio knows."""
        return self.studio.state

    def compose(self) -> ComposeResult:
        yield StudioHeader()
        yield Static("", id="missing", classes="-none")
        yield from self.compose_body()
        yield Input(placeholder="filter rows (Enter keeps it, Esc clears)", id="filter")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """Yield the screen's own widgets."""
        yield from ()

    def on_screen_resume(self) -> None:
        self.refresh_view(force=True)

    def on_studio_screen_state_changed(self, _: StateChanged) -> None:
        # at most one redraw per REDRAW_S: a steady stream of batches must not starve input
        wait = self.REDRAW_S - (time.monotonic() - self._last_draw)
        if wait <= 0:
            self.refresh_view()
        elif self._redraw_timer is None:
            self._redraw_timer = self.set_timer(wait, self._deferred_redraw)

    def _deferred_redraw(self) -> None:
        self._redraw_timer = None
        self.refresh_view()

    def refresh_header(self) -> None:
        """Redraw the header (the app calls this every second for the wall clock)."""
        if not self.query(StudioHeader):
            return
        now = self.studio.clock() if self.studio.clock else datetime.now(UTC)
        self.query_one(StudioHeader).show(self.state, now, self.MODE)

    def refresh_view(self, *, force: bool = False) -> None:
        """Redraw the header, the missing-roles line and, if a drawn section moved, the body."""
        if not self.is_mounted or not self.query(StudioHeader):
            return  # not composed yet: the resume after composing draws
        self.refresh_header()
        missing = [r for r in self.state.missing_roles(self.ROLES)] if self.ROLES else []
        line = self.query_one("#missing", Static)
        line.set_class(not missing, "-none")
        if missing:
            line.update("not running: " + ", ".join(missing) + " — " + self.missing_hint(missing))
        versions = {s: self.state.versions[s] for s in self.SECTIONS}
        if force or versions != self._drawn:
            self._drawn = versions
            self._last_draw = time.monotonic()
            self.draw(self.state)

    def missing_hint(self, missing: list[str]) -> str:
        """Say what a missing role means for this screen."""
        return "their panels stay empty until they start"

    def draw(self, state: StudioState) -> None:
        """Draw the body from `state`."""

    # --- filter ---------------------------------------------------------------------------------

    def open_filter(self) -> None:
        """Show the filter input and focus it."""
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value.strip()
            self.draw(self.state)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.focus_next()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("-shown") or self.filter_text:
            box.value = ""
            box.remove_class("-shown")
            self.filter_text = ""
            self.draw(self.state)
