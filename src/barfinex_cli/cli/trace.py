"""`bfx trace ID`: the chain of events behind any event, as a tree from its root."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from barfinex_cli.contracts.envelope import Envelope


def build_tree(events: list[Envelope[Any]]) -> list[dict[str, Any]]:
    """Nest events by `parent_id`; events whose parent is missing become roots."""
    nodes: dict[str, dict[str, Any]] = {
        e.id: {"event": e.model_dump(mode="json", by_alias=True), "children": []} for e in events
    }
    roots: list[dict[str, Any]] = []
    for e in events:
        parent = nodes.get(e.parent_id) if e.parent_id else None
        (parent["children"] if parent is not None else roots).append(nodes[e.id])
    return roots


def trace(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Any event id (or 8+ char prefix) or trace id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Show every event of a trace as a tree: candle -> signal -> decision -> verdict -> order.

    Example: bfx trace 01a2105c --json
    """
    from barfinex_cli.cli.events import open_store, summary
    from barfinex_cli.cli.render import out, print_json

    with open_store(ctx) as store:
        events = store.trace(ref)
    roots = build_tree(events)
    if as_json:
        print_json(roots)
        return
    from rich.markup import escape
    from rich.tree import Tree

    by_id = {e.id: e for e in events}

    def label(node: dict[str, Any]) -> str:
        e = by_id[node["event"]["id"]]
        mark = "[bold yellow]*[/] " if e.id.startswith(ref) else ""
        return (
            f"{mark}[bold]{e.type}[/] [dim]{e.ts:%Y-%m-%d %H:%M:%S} {e.source} {e.id}[/]\n"
            f"{escape(summary(e, 8))}"
        )

    def grow(branch: Tree, node: dict[str, Any]) -> None:
        for child in node["children"]:
            grow(branch.add(label(child)), child)

    for root in roots:
        tree = Tree(label(root))
        grow(tree, root)
        out().print(tree)
