"""Screen 3, Decisions: the advisor's log, and one decision explained stage by stage.

The table holds the advisor's latest runs (its `/api/v1/decisions` through the provider's proxy,
plus the outcomes seen live since). Highlighting one fetches its explanation in a worker
(`/api/v1/decisions/{id}`) and shows the eight stages with their outcome and reason, the raw
and calibrated conviction, the regime, the language model's reasoning or why it was skipped, and
what followed: the inspector's verdict and the orders that carry the decision's id.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from barfinex_cli.errors import BfxError
from barfinex_cli.studio.screens.base import StudioScreen, matches, table
from barfinex_cli.studio.state import StudioState

MAX_ROWS = 300


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("—" if value is None else str(value))


def facts(explanation: dict[str, Any]) -> dict[str, str]:
    """Pick from an explanation's events what the panel shows: convictions, regime, the LLM."""
    out = {"raw": "—", "calibrated": "—", "regime": "—", "llm": "—"}
    for event in explanation.get("events", []):
        kind, payload = event.get("type"), event.get("payload") or {}
        if kind == "advisor.conviction.scored":
            out["raw"] = _num(payload.get("conviction"))
        elif kind == "advisor.conviction.calibrated":
            out["raw"] = _num(payload.get("raw"))
            out["calibrated"] = f"{_num(payload.get('calibrated'))} ({payload.get('method')})"
            out["regime"] = str(payload.get("regime"))
        elif kind == "advisor.regime.detected":
            out["regime"] = str(payload.get("regime"))
        elif kind == "advisor.llm.responded":
            verdict = "accepted" if payload.get("accepted") else "discarded"
            out["llm"] = (
                f"{payload.get('model')} ({verdict}, bias {payload.get('bias')}, "
                f"x{payload.get('sizing_multiplier')}): {payload.get('reasoning')}"
            )
        elif kind == "advisor.llm.skipped":
            out["llm"] = f"skipped: {payload.get('reason')} {payload.get('detail', '')}".strip()
        elif kind == "advisor.llm.failed" and out["llm"] == "—":
            out["llm"] = f"failed: {payload.get('error')} — {payload.get('message')}"
    return out


class DecisionsScreen(StudioScreen):
    """The advisor's decisions and rejections, explained."""

    DEFAULT_CSS = """
    DecisionsScreen #advisor-note { padding: 0 1; height: auto; }
    DecisionsScreen #decisions { height: 1fr; }
    DecisionsScreen #explain { height: 1fr; border-top: solid $accent; }
    DecisionsScreen #stages { width: 1fr; }
    DecisionsScreen #facts { width: 1fr; padding: 0 1; }
    """
    MODE = "decisions"
    SECTIONS = ("decisions", "verdicts", "orders")
    ROLES = ("advisor",)

    class Explained(Message):
        """A decision's explanation arrived from the advisor (or why it could not)."""

        def __init__(self, decision_id: str, data: dict[str, Any] | None, problem: str) -> None:
            super().__init__()
            self.decision_id, self.data, self.problem = decision_id, data, problem

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.explained: dict[str, Any] | None = None
        self._explained_id: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("", id="advisor-note")
        yield table(
            "decisions",
            "time",
            "symbol",
            "outcome",
            "side",
            "conviction",
            "regime",
            "stage / reason",
        )
        with Horizontal(id="explain"):
            yield table("stages", "stage", "outcome", "detail", cursor="none")
            with Vertical(id="facts"):
                yield Static("", id="summary")

    def missing_hint(self, missing: list[str]) -> str:
        return "no advisor is running, so there is no decision log (`bfx advisor run`)"

    def draw(self, state: StudioState) -> None:
        note = self.query_one("#advisor-note", Static)
        problem = state.advisor.problem
        note.update(Text(f"advisor: {problem}", style="yellow") if problem else "")
        table = self.query_one("#decisions", DataTable)
        current = self._explained_id
        table.clear()
        shown: set[str] = set()
        for key, row in reversed(state.decisions.items()):
            made = row.get("type") == "advisor.decision"
            # a signal dropped before the pipeline (a close, a stale signal) has no stage
            stage = row.get("stage")
            outcome = "decision" if made else ("rejected" if stage else "dropped")
            why = f"{stage}: {row.get('reason')}" if stage else str(row.get("reason") or "")
            cells = (
                str(row.get("ts") or "")[:19].replace("T", " "), row.get("symbol") or "—",
                outcome,
                row.get("side") or row.get("direction") or "—", _num(row.get("conviction")),
                row.get("regime") or "—",
                "" if made else why,
            )  # fmt: skip
            if not matches(self.filter_text, cells):
                continue
            style = "green" if made else "yellow"
            table.add_row(*cells[:2], Text(cells[2], style=style), *cells[3:], key=key)
            shown.add(key)
            if len(shown) >= MAX_ROWS:
                break
        if current in shown:
            table.move_cursor(row=table.get_row_index(current))
        self._draw_explanation()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "decisions" or event.row_key.value is None:
            return
        key = str(event.row_key.value)
        if key != self._explained_id:
            self._explained_id = key
            self.explained = None
            self._draw_explanation()
            self.explain(key)

    @work(exclusive=True, group="explain")
    async def explain(self, decision_id: str) -> None:
        """Fetch one decision's explanation from the advisor."""
        app = self.state.advisor.app
        if app is None:
            self.post_message(self.Explained(decision_id, None, "no advisor to ask"))
            return
        try:
            data = await self.studio.roles.decision(app, decision_id)
        except BfxError as exc:
            self.post_message(self.Explained(decision_id, None, str(exc)))
            return
        self.post_message(self.Explained(decision_id, data, ""))

    def on_decisions_screen_explained(self, message: Explained) -> None:
        if message.decision_id == self._explained_id:
            self.explained = (
                message.data if message.data is not None else {"problem": message.problem}
            )
            self._draw_explanation()

    def _draw_explanation(self) -> None:
        stages = self.query_one("#stages", DataTable)
        stages.clear()
        summary = self.query_one("#summary", Static)
        key = self._explained_id
        if key is None:
            summary.update(Text("Highlight a decision to explain it.", style="dim"))
            return
        data = self.explained
        if data is None:
            summary.update(Text("asking the advisor…", style="dim"))
            return
        if "problem" in data:
            summary.update(Text(f"cannot explain it: {data['problem']}", style="yellow"))
            return
        colour = {"passed": "green", "blocked": "red", "skipped": "yellow"}
        for stage in data.get("stages", []):
            outcome = str(stage.get("outcome"))
            stages.add_row(stage.get("stage"), Text(outcome, style=colour.get(outcome, "")),
                           stage.get("detail") or "")  # fmt: skip
        found = facts(data)
        text = Text()
        text.append(f"{data.get('type')}  {data.get('symbol')} {data.get('direction')}\n", "bold")
        text.append(f"conviction  raw {found['raw']} · calibrated {found['calibrated']}\n")
        text.append(f"regime      {found['regime']}\n")
        text.append(f"LLM         {found['llm']}\n")
        if data.get("type") == "advisor.decision":
            text.append(
                f"intent      {data.get('side')} {data.get('size')} @ {data.get('entry')} "
                f"stop {data.get('stop')} tp {data.get('take_profit')}\n"
            )
        else:
            text.append(f"stopped at  {data.get('stage')}: {data.get('reason')}\n")
        verdict = self.state.verdict_of.get(key)
        pending = self.state.pending_of.get(key)
        text.append("verdict     ")
        if verdict is None and pending is not None:
            text.append(f"pending: {pending.reason}\n", style="yellow")
        elif verdict is None:
            text.append("— (none seen since the studio connected)\n", style="dim")
        else:
            style = "green" if verdict.verdict == "ALLOW" else "red"
            text.append(f"{verdict.verdict}", style=style)
            text.append(f" by {verdict.policy}: {verdict.reason}\n")
        orders = [o for o in self.state.orders.values() if o.decision_id == key]
        if not orders:
            text.append("orders      —\n", style="dim")
        for order in orders:
            text.append(
                f"order       {order.client_order_id} {order.side} {order.type} {order.amount} "
                f"filled {order.filled} {order.status or ''}\n"
            )
        summary.update(text)
