"""The catalogue holds every event type the design names, each with a strict, documented model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from pydantic import BaseModel

from barfinex_cli.contracts import advisor, apps, catalog, detector, inspector, market, orders
from barfinex_cli.contracts.catalog import CATALOG, is_known, known_types, payload_model
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import UnknownEventType

DESIGN_TYPES = {
    "market.trade", "market.candle", "market.book", "market.ticker", "market.gap",
    "market.repaired", "provider.health",
    "order.submitted", "order.accepted", "order.partially_filled", "order.filled",
    "order.cancelled", "order.rejected", "position.changed", "account.balance",
    "detector.signal", "detector.metrics",
    "advisor.context.fetched", "advisor.quality.passed", "advisor.quality.blocked",
    "advisor.ml.scored", "advisor.conviction.scored", "advisor.regime.detected",
    "advisor.regime.rotated", "advisor.conviction.calibrated", "advisor.llm.requested",
    "advisor.llm.responded", "advisor.llm.failed", "advisor.llm.skipped",
    "advisor.llm.hallucination", "advisor.model.switched", "advisor.validation.passed",
    "advisor.validation.blocked", "advisor.attribution", "advisor.decision",
    "inspector.verdict", "inspector.protective.placed", "inspector.protective.moved",
    "inspector.protective.triggered", "inspector.fill_audit", "inspector.reconciled",
    "inspector.divergence", "inspector.kpi", "inspector.alert",
    "registry.registered", "registry.heartbeat", "registry.lost",
}  # fmt: skip

HEAVY_MODULES = ("polars", "numpy", "pandas", "textual", "ccxt", "litellm", "sklearn", "redis")


def test_catalogue_holds_every_event_type_named_in_the_design() -> None:
    assert DESIGN_TYPES - set(CATALOG) == set()


def test_catalogue_holds_the_26_advisor_types_the_pipeline_and_training_emit() -> None:
    # 24 come out of a pipeline run, 2 out of training; tests/advisor/test_catalogue.py proves
    # each pipeline type is produced in some real situation.
    families = Counter(name.split(".")[0] for name in CATALOG)
    assert families["advisor"] == 26
    assert {m.event_type for m in advisor.TRAINING_EVENTS} == {
        "advisor.model.trained",
        "advisor.calibration.trained",
    }


def test_no_two_models_claim_the_same_event_type() -> None:
    declared = [model.event_type for module in catalog._MODULES for model in module.EVENTS]
    duplicates = [name for name, count in Counter(declared).items() if count > 1]
    assert duplicates == []
    assert len(declared) == len(CATALOG)


def test_every_contract_module_is_in_the_catalogue() -> None:
    assert set(catalog._MODULES) == {market, orders, detector, advisor, inspector, apps}


@pytest.mark.parametrize("event_type", known_types())
def test_event_types_are_lowercase_dotted_names(event_type: str) -> None:
    parts = event_type.split(".")
    assert len(parts) >= 2
    assert all(part and part.replace("_", "").isalpha() and part.islower() for part in parts)


@pytest.mark.parametrize("event_type", known_types())
def test_every_payload_model_is_frozen_strict_and_documented(event_type: str) -> None:
    model = CATALOG[event_type]
    assert issubclass(model, Payload)
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("allow_inf_nan") is False
    doc = model.__dict__.get("__doc__")
    assert doc and "\n" not in doc.strip(), f"{model.__name__} needs its own one-line docstring"


@pytest.mark.parametrize("event_type", known_types())
def test_nested_models_are_strict_too(event_type: str) -> None:
    for field in CATALOG[event_type].model_fields.values():
        for nested in _models_in(field.annotation):
            assert nested.model_config.get("extra") == "forbid", nested.__name__
            assert nested.model_config.get("frozen") is True, nested.__name__


def test_payload_model_of_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(UnknownEventType) as info:
        payload_model("market.nonsense")
    assert "market.candle" in str(info.value)
    assert not is_known("market.nonsense")
    assert payload_model("market.candle") is CandleClosed


def test_candle_closed_keeps_its_wire_shape() -> None:
    assert CandleClosed.event_type == "market.candle"
    assert list(CandleClosed.model_fields) == [
        "exchange", "symbol", "timeframe", "open_time", "open", "high", "low", "close", "volume",
        "trades", "buy_volume", "sell_volume",
    ]  # fmt: skip
    # order flow was added as optional fields: a candle encoded before them still decodes
    old = CandleClosed.model_validate_json(
        '{"exchange": "x", "symbol": "BTC/USDT", "timeframe": "1m", '
        '"open_time": "2024-01-01T00:00:00Z", "open": "1", "high": "2", "low": "1", '
        '"close": "2", "volume": "3", "trades": null}'
    )
    assert old.buy_volume is None and old.sell_volume is None


def test_importing_the_contracts_pulls_in_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import barfinex_cli.contracts.codec, barfinex_cli.contracts.catalog\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert loaded.isdisjoint(HEAVY_MODULES), sorted(loaded.intersection(HEAVY_MODULES))


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_models_in(arg))
    return found


def test_a_decision_encoded_before_its_kind_decodes_as_an_open() -> None:
    from barfinex_cli.contracts.advisor import DecisionMade

    old = DecisionMade.model_validate_json(
        '{"signal_id": "s", "exchange": "x", "symbol": "BTC/USDT", "side": "buy", '
        '"entry": "100", "stop": "98", "take_profit": "104", "size": "1", "conviction": 0.7, '
        '"reasoning": "r"}'
    )
    assert old.kind == "open"
