"""`render.stream_json`: one JSON document, written while its items are still being produced."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from barfinex_cli.cli.render import stream_json


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 2500])
def test_the_streamed_document_is_the_one_print_json_would_print(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = io.StringIO()
    monkeypatch.setattr("sys.stdout", stdout)
    head = {"strategy": "s", "broken": {"r": "no buy_volume column"}, "n": 1.5}
    items = [{"i": i, "rules": ["a", "b"], "values": {"x": None}} for i in range(count)]
    stream_json(head, "signals", iter(items))
    assert json.loads(stdout.getvalue()) == {**head, "signals": items}


def test_items_are_written_before_the_last_is_produced(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = io.StringIO()
    monkeypatch.setattr("sys.stdout", stdout)
    written_before_last: list[int] = []

    def items() -> Iterator[dict[str, int]]:
        for i in range(250):
            if i == 249:
                written_before_last.append(stdout.getvalue().count('"i"'))
            yield {"i": i}

    stream_json({"a": 1}, "items", items(), chunk=100)
    assert written_before_last == [200]  # two chunks out while the third was being made
    assert len(json.loads(stdout.getvalue())["items"]) == 250
