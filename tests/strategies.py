"""Hypothesis strategies for every contract, derived from the models themselves.

`payloads(model)` reads a model's fields and builds values that satisfy their types and their
ge/le/gt/lt and length bounds, so a new event type is covered by the property tests the moment it
joins the catalogue. A field type this module does not know raises `TypeError` naming it, rather
than being silently skipped.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, Union, cast, get_args, get_origin

import annotated_types as at
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from barfinex_cli.contracts.catalog import CATALOG
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.types import Payload

M = TypeVar("M", bound=BaseModel)

MIN_TIME = datetime(1970, 1, 1)
MAX_TIME = datetime(2200, 1, 1)
DECIMAL_PLACES = 8
DECIMAL_LIMIT = Decimal(10) ** 15
INT_LIMIT = 2**63 - 1
MAX_ITEMS = 4

sources = st.from_regex(r"[a-z]{1,10}(/[a-z0-9-]{1,10})?", fullmatch=True)
utc_datetimes = st.datetimes(MIN_TIME, MAX_TIME, timezones=st.just(UTC))


def payloads(model: type[M]) -> st.SearchStrategy[M]:
    """Return a strategy for valid instances of `model`, built field by field."""
    return cast("st.SearchStrategy[M]", _payloads(model))


@cache
def _payloads(model: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    fields = {
        info.alias or name: _for_type(info.annotation, _flatten(info.metadata))
        for name, info in model.model_fields.items()
    }
    return st.fixed_dictionaries(fields).map(lambda values: model(**values))


def envelopes(model: type[Payload] | None = None) -> st.SearchStrategy[Envelope[Any]]:
    """Return envelopes made by `make_event` around `model`, or around any catalogue type."""
    chosen = st.just(model) if model is not None else st.sampled_from(catalogue_models())
    return st.builds(
        lambda payload, source, ts: make_event(payload, source=source, ts=ts),
        chosen.flatmap(payloads),
        sources,
        utc_datetimes,
    )


def any_event() -> st.SearchStrategy[Envelope[Any]]:
    """Return envelopes of every type in the catalogue."""
    return envelopes()


def catalogue_models() -> list[type[Payload]]:
    """Return the catalogue's payload models in a stable order (by event type)."""
    return [CATALOG[name] for name in sorted(CATALOG)]


def _flatten(metadata: Sequence[Any]) -> list[Any]:
    """Unpack `Field(...)` objects found inside `Annotated` into their constraint objects."""
    flat: list[Any] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            flat.extend(_flatten(item.metadata))
        elif isinstance(item, at.GroupedMetadata):
            flat.extend(item)
        else:
            flat.append(item)
    return flat


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            value = getattr(item, name, None)
            if value is not None and isinstance(item, at.BaseMetadata):
                bounds[name] = value
    return bounds


def _for_type(tp: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *extra = get_args(tp)
        return _for_type(inner, metadata + _flatten(extra))
    if tp is type(None):
        return st.none()
    if origin in (Union, types.UnionType):
        return st.one_of([_for_type(arg, metadata) for arg in get_args(tp)])
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return payloads(tp)
    bounds = _bounds(metadata)
    if origin in (list, tuple, dict):
        return _for_container(tp, origin, bounds)
    if tp is bool:
        return st.booleans()
    if tp is int:
        low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else -INT_LIMIT)
        high = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else INT_LIMIT)
        return st.integers(low, high)
    if tp is float:
        return st.floats(
            min_value=bounds.get("ge", bounds.get("gt")),
            max_value=bounds.get("le", bounds.get("lt")),
            exclude_min="gt" in bounds,
            exclude_max="lt" in bounds,
            allow_nan=False,
            allow_infinity=False,
        )
    if tp is Decimal:
        return _decimals(bounds)
    if tp is str:
        return st.text(min_size=bounds.get("min_length", 0), max_size=bounds.get("max_length", 20))
    if tp is AwareDatetime or tp is datetime:
        return utc_datetimes
    raise TypeError(f"tests/strategies.py cannot generate values of type {tp!r}; teach _for_type")


def _for_container(tp: Any, origin: Any, bounds: dict[str, Any]) -> st.SearchStrategy[Any]:
    args = get_args(tp)
    size = {
        "min_size": bounds.get("min_length", 0),
        "max_size": bounds.get("max_length", MAX_ITEMS),
    }
    if origin is list:
        return st.lists(_for_type(args[0], []), **size)
    if origin is dict:
        return st.dictionaries(_for_type(args[0], []), _for_type(args[1], []), **size)
    if len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_for_type(args[0], []), **size).map(tuple)
    return st.tuples(*(_for_type(arg, []) for arg in args))


def _decimals(bounds: dict[str, Any]) -> st.SearchStrategy[Decimal]:
    low = bounds.get("ge", bounds.get("gt", -DECIMAL_LIMIT))
    high = bounds.get("le", bounds.get("lt", DECIMAL_LIMIT))
    values = st.decimals(
        min_value=low, max_value=high, places=DECIMAL_PLACES, allow_nan=False, allow_infinity=False
    )
    if "gt" in bounds:
        values = values.filter(lambda d: d > bounds["gt"])
    if "lt" in bounds:
        values = values.filter(lambda d: d < bounds["lt"])
    return values
