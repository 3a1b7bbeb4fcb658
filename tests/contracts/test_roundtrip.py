"""Every event survives encode/decode unchanged; anything malformed raises `MalformedEvent`."""

from __future__ import annotations

import enum
import itertools
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, NonNegativeInt, ValidationError

from barfinex_cli.contracts.catalog import CATALOG, known_types
from barfinex_cli.contracts.codec import MalformedEvent, decode, encode
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.ids import uuid7, uuid7_time_ms
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.types import Model, UtcDatetime
from strategies import any_event, envelopes, payloads

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CANDLE = CandleClosed(
    exchange="binance",
    symbol="BTC/USDT",
    timeframe="1m",
    open_time=NOW,
    open=Decimal("100.5"),
    high=Decimal("101"),
    low=Decimal("99.25"),
    close=Decimal("100"),
    volume=Decimal("12.5"),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@pytest.mark.parametrize("event_type", known_types())
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_payload_round_trips_through_json_unchanged(
    event_type: str, data: st.DataObject
) -> None:
    event = data.draw(envelopes(CATALOG[event_type]))
    decoded = decode(encode(event), event_type)
    assert decoded == event
    assert decoded.payload == event.payload
    assert type(decoded.payload) is CATALOG[event_type]
    assert encode(decoded) == encode(event)


@settings(max_examples=100, deadline=None)
@given(event=any_event())
def test_any_event_decodes_to_its_own_type_without_a_type_hint(event: Envelope[Any]) -> None:
    decoded = decode(encode(event))
    assert decoded == event
    assert type(decoded.payload) is CATALOG[event.type]


@settings(max_examples=50, deadline=None)
@given(event=any_event(), key=st.text(min_size=1, max_size=10))
def test_unknown_payload_fields_are_rejected(event: Envelope[Any], key: str) -> None:
    raw = json.loads(encode(event))
    if key in raw["payload"]:
        key += "_unexpected"
    raw["payload"][key] = 1
    with pytest.raises(MalformedEvent):
        decode(json.dumps(raw))
    with pytest.raises(ValidationError):
        type(event.payload).model_validate(raw["payload"])


def test_unknown_envelope_fields_are_rejected() -> None:
    raw = json.loads(encode(make_event(CANDLE, source="provider")))
    raw["priority"] = "high"
    with pytest.raises(MalformedEvent, match="priority"):
        decode(json.dumps(raw))


def test_naive_datetimes_are_rejected_in_payloads_and_envelopes() -> None:
    with pytest.raises(ValidationError):
        CandleClosed.model_validate({**CANDLE.model_dump(), "open_time": datetime(2024, 5, 1)})
    raw = json.loads(encode(make_event(CANDLE, source="provider")))
    naive = {**raw, "ts": "2024-05-01T12:00:00"}
    with pytest.raises(MalformedEvent, match="ts"):
        decode(json.dumps(naive))
    naive_payload = {**raw, "payload": {**raw["payload"], "open_time": "2024-05-01T12:00:00"}}
    with pytest.raises(MalformedEvent, match="open_time"):
        decode(json.dumps(naive_payload))


def test_aware_datetimes_in_other_zones_are_normalised_to_utc() -> None:
    raw = json.loads(encode(make_event(CANDLE, source="provider")))
    raw["payload"]["open_time"] = "2024-05-01T14:00:00+02:00"
    decoded = decode(json.dumps(raw))
    assert decoded.payload.open_time == NOW
    assert decoded.payload.open_time.tzinfo is UTC


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")])
def test_non_finite_numbers_are_rejected(bad: float | Decimal) -> None:
    with pytest.raises(ValidationError):
        CandleClosed.model_validate({**CANDLE.model_dump(), "close": bad})
    with pytest.raises(ValidationError):
        SignalGenerated(
            strategy="s", instance="i", exchange="x", symbol="BTC/USDT", timeframe="1m",
            candle_time=NOW, direction="long", score=float(bad), threshold=0.5, attribution=[],
        )  # fmt: skip


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not json",
        b"[1, 2, 3]",
        b'"market.candle"',
        b'{"type": 3}',
        b'{"type": "market.candle"}',
        b'{"type": "market.candle", "payload": {}}',
        b"\xff\xfe\x00",
    ],
)
def test_garbage_raises_malformed_event(garbage: bytes) -> None:
    with pytest.raises(MalformedEvent):
        decode(garbage)


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary() | st.text() | json_values.map(json.dumps))
def test_arbitrary_bytes_and_json_raise_malformed_event(garbage: bytes | str) -> None:
    with pytest.raises(MalformedEvent):
        decode(garbage)


def test_event_on_the_stream_of_another_type_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        decode(encode(make_event(CANDLE, source="provider")), "market.trade")


def test_unknown_type_decodes_with_a_dict_payload() -> None:
    raw = json.loads(encode(make_event(CANDLE, source="provider")))
    raw["type"] = "future.thing"
    raw["payload"] = {"anything": [1, "two"], "nested": {"x": None}}
    event = decode(json.dumps(raw))
    assert event.type == "future.thing"
    assert event.payload == raw["payload"]
    assert json.loads(encode(event)) == raw


def test_child_events_inherit_the_trace_and_point_at_their_parent() -> None:
    root = make_event(CANDLE, source="provider")
    child = make_event(CANDLE, source="detector/ema", parent=root)
    grandchild = make_event(CANDLE, source="advisor", parent=child)
    assert root.trace_id == root.id
    assert root.parent_id is None
    assert child.trace_id == grandchild.trace_id == root.id
    assert child.parent_id == root.id
    assert grandchild.parent_id == child.id
    assert len({root.id, child.id, grandchild.id}) == 3


def test_event_ids_strictly_increase_within_one_process() -> None:
    ids = [uuid7() for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    events = [make_event(CANDLE, source="provider") for _ in range(200)]
    assert all(a.id < b.id for a, b in itertools.pairwise(events))


def test_event_ids_keep_increasing_when_the_clock_steps_back() -> None:
    now_ms = uuid7_time_ms(uuid7())
    first = uuid7(now_ms=now_ms + 5)
    stepped_back = uuid7(now_ms=now_ms - 1_000)
    assert first < stepped_back
    assert uuid7_time_ms(stepped_back) >= now_ms


@settings(max_examples=25, deadline=None)
@given(candle=payloads(CandleClosed))
def test_payloads_are_immutable(candle: CandleClosed) -> None:
    with pytest.raises(ValidationError):
        candle.close = Decimal(1)  # type: ignore[misc]


class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _Inner(Model):
    """A nested model for the strategy builder's own test."""

    at: UtcDatetime
    weight: Annotated[float, Field(gt=0.0, lt=1.0)]


class _EveryShape(Model):
    """One field of every shape `payloads()` claims to support."""

    flag: bool
    count: Annotated[int, Field(gt=-3, lt=3)]
    ratio: Annotated[float, Field(ge=0.5, le=0.75)]
    price: Annotated[Decimal, Field(gt=0, le=10)]
    name: Annotated[str, Field(min_length=2, max_length=4)]
    colour: _Colour
    kind: Literal["a", "b"]
    maybe: NonNegativeInt | None
    levels: list[tuple[Decimal, Annotated[Decimal, Field(ge=0)]]]
    tags: tuple[str, ...]
    scores: dict[str, Annotated[float, Field(ge=0, le=1)]]
    inner: _Inner
    inners: Annotated[list[_Inner], Field(min_length=1, max_length=2)]


@settings(max_examples=50, deadline=None)
@given(value=payloads(_EveryShape))
def test_payload_strategy_honours_types_and_bounds(value: _EveryShape) -> None:
    assert -3 < value.count < 3
    assert 0.5 <= value.ratio <= 0.75
    assert 0 < value.price <= 10
    assert 2 <= len(value.name) <= 4
    assert isinstance(value.colour, _Colour)
    assert all(amount >= 0 for _, amount in value.levels)
    assert isinstance(value.tags, tuple)
    assert all(0 <= score <= 1 for score in value.scores.values())
    assert 1 <= len(value.inners) <= 2
    assert all(0 < inner.weight < 1 and inner.at.tzinfo is UTC for inner in value.inners)
    assert _EveryShape.model_validate(value.model_dump()) == value
