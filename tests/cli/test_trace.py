"""`bfx trace`'s tree text: what a verdict's figures look like under it."""

from __future__ import annotations

from barfinex_cli.cli.trace import build_tree, tree_lines
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.inspector import VerdictIssued


def test_a_verdict_in_the_trace_shows_the_figures_its_policy_saw() -> None:
    verdict = VerdictIssued(
        decision_id="d1", verdict="THROTTLE", policy="trades_per_day",
        reason="5 trades today, at max_trades_per_day 5",
        figures={"trades_today": 5, "max_trades_per_day": 5},
    )  # fmt: skip
    event = make_event(verdict, source="inspector/inspector")
    lines = tree_lines(build_tree([event]), {event.id: event})
    assert lines[-1].strip() == "figures: trades_today=5, max_trades_per_day=5"


def test_a_verdict_without_figures_adds_no_line() -> None:
    verdict = VerdictIssued(decision_id="d1", verdict="ALLOW", policy="risk_per_trade", reason="")
    event = make_event(verdict, source="inspector/inspector")
    lines = tree_lines(build_tree([event]), {event.id: event})
    assert not any("figures:" in line for line in lines)
