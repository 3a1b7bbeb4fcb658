"""`bfx trace ID`: the chain of events behind any event, as a tree from its root."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from barfinex_cli.contracts.envelope import Envelope


ORDER_TYPES = (
    "order.submitted", "order.accepted", "order.partially_filled", "order.filled",
    "order.cancelled", "order.rejected",
)  # fmt: skip


def build_tree(
    events: list[Envelope[Any]], links: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Nest events by `parent_id` (or `links`: event id -> parent id); orphans become roots."""
    nodes: dict[str, dict[str, Any]] = {
        e.id: {"event": e.model_dump(mode="json", by_alias=True), "children": []} for e in events
    }
    roots: list[dict[str, Any]] = []
    for e in events:
        up = (links or {}).get(e.id) or e.parent_id
        parent = nodes.get(up) if up else None
        (parent["children"] if parent is not None else roots).append(nodes[e.id])
    return roots


def trace(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="Any event id, a unique start or end of one (8+ characters), a trace id, or "
            "an order's client order id (i-DECISION-e).",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Show every event of a trace as a tree: candle -> signal -> decision -> verdict -> order.

    Ids made in the same minute share their start, so copy the end of an id (its last 12
    characters are random) or the whole id; listings always print ids whole.

    Example: bfx trace 8a1b-d346e336bd8a --json
    """
    from barfinex_cli.cli.events import open_store
    from barfinex_cli.cli.render import print_json

    with open_store(ctx) as store:
        events, links = chain_of(store, ref)
    roots = build_tree(events, links)
    if as_json:
        print_json(roots)
        return
    for line in tree_lines(roots, {e.id: e for e in events}, ref):
        typer.echo(line)


def chain_of(store: Any, ref: str) -> tuple[list[Envelope[Any]], dict[str, str]]:
    """Return the trace of `ref`; a client order id (`i-DECISION-e`) is its decision's trace.

    The broker publishes an order's events as roots of their own; given the inspector's client
    order id (derived from the decision id), the decision's trace (candle, signal, stages,
    verdict) is returned with that order's events hung under the verdict (`links`).
    """
    import re

    from barfinex_cli.errors import NotFound

    found = re.fullmatch(r"i-([0-9a-f-]{36})-[a-z]+[0-9]*", ref.strip())
    if found is None:
        return store.trace(ref), {}
    decision = found.group(1)
    try:
        events: list[Envelope[Any]] = store.trace(decision)
    except NotFound:
        return store.trace(ref), {}
    orders = [
        e for e in store.query(list(ORDER_TYPES), limit=None)
        if e.payload.order.client_order_id == ref.strip()
    ]  # fmt: skip
    verdicts = [e.id for e in events if e.type == "inspector.verdict"]
    under = verdicts[0] if verdicts else decision
    return [*events, *orders], {e.id: under for e in orders}


def tree_lines(
    roots: list[dict[str, Any]], by_id: dict[str, Envelope[Any]], ref: str = ""
) -> list[str]:
    """Return the tree as plain lines, ids whole: a pipe or a narrow terminal never cuts them.

    The event `ref` names is marked with `*`.
    """
    from barfinex_cli.cli.events import summary

    lines: list[str] = []

    def picked(event_id: str) -> bool:
        if event_id == ref:
            return True
        return len(ref) >= 8 and (event_id.startswith(ref) or event_id.endswith(ref))

    def grow(node: dict[str, Any], lead: str, branch: str, rest: str) -> None:
        e = by_id[node["event"]["id"]]
        mark = "* " if picked(e.id) else ""
        lines.append(f"{lead}{branch}{mark}{e.type}  {e.ts:%Y-%m-%d %H:%M:%S}  {e.source}  {e.id}")
        text = summary(e, 8)
        children = node["children"]
        under = f"{lead}{rest}{'│   ' if children else '    '}"
        if text:
            lines.append(f"{under}{text}")
        figures = getattr(e.payload, "figures", None) if e.type == "inspector.verdict" else None
        if figures:  # what the deciding policy saw, as the verdict carries it
            lines.append(f"{under}figures: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        for i, child in enumerate(children):
            last = i == len(children) - 1
            grow(child, lead + rest, "└── " if last else "├── ", "    " if last else "│   ")

    for root in roots:
        grow(root, "", "", "")
    return lines
