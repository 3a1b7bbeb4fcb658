"""Hostile files and messages: each is refused with one line naming the problem, never a traceback.

Hypothesis writes strategy files, policy files and `bfx.toml` files of random text, random bytes,
huge and deeply nested content; each either loads or raises the `BfxError` the CLI prints as one
line. WebSocket client frames and bus messages of wrong types, huge or nested past any parser's
depth get an error frame or become a `MalformedEvent` (what consumers dead-letter with its reason);
a real Redis consumer dead-letters them and keeps handling good events.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.codec import MalformedEvent, decode
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.errors import BfxError
from barfinex_cli.inspector.policies.loading import load_policies
from barfinex_cli.provider.gateway.ws import WsClient, apply_message
from barfinex_cli.runtime.settings import load_settings

SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # explain imports libcst: warnings
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip


def _nested(depth: int, kind: str) -> str:
    return {
        "toml-array": "a = " + "[" * depth + "]" * depth,
        "toml-table": "a = " + "{b = " * depth + "1" + "}" * depth,
        "python": "x = " + "(" * depth + "1" + ")" * depth,
        "python-unary": "x = " + "-" * depth + "1",
        "python-list": "x = " + "[" * depth + "]" * depth,
        "json": "[" * depth + "]" * depth,
    }[kind]


def _hostile_text(kinds: list[str]) -> st.SearchStrategy[bytes]:
    """Random text, random bytes, huge content and nesting to depths a parser cannot take."""
    nested = st.builds(
        _nested, st.sampled_from([10, 300, 5_000, 200_000]), st.sampled_from(kinds)
    ).map(str.encode)
    return st.one_of(
        st.binary(max_size=2_000),
        st.text(max_size=2_000).map(str.encode),
        st.text(string.printable, max_size=300).map(lambda s: (s * 5_000).encode()),
        st.just(b"a = \x00"),
        st.just(b"\xef\xbb\xbf[x]\ny = 1\n"),
        nested,
    )


def _one_line(exc: BfxError) -> None:
    message = str(exc)
    assert message and "\n" not in message.strip(), message
    assert "Traceback" not in message


@SETTINGS
@given(content=_hostile_text(["python", "python-list", "python-unary"]))
def test_a_hostile_strategy_file_is_one_strategy_error_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hostile.py"
        path.write_bytes(content)
        try:
            load_strategy(path)
        except BfxError as exc:
            _one_line(exc)


@SETTINGS
@given(content=_hostile_text(["toml-array", "toml-table"]))
def test_a_hostile_policy_file_is_one_config_error_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policies.toml"
        path.write_bytes(content)
        try:
            load_policies(path)
        except BfxError as exc:
            _one_line(exc)


@SETTINGS
@given(content=_hostile_text(["toml-array", "toml-table"]))
def test_a_hostile_bfx_toml_is_one_config_error_line(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bfx.toml"
        path.write_bytes(content)
        try:
            load_settings(path, home=Path(tmp))
        except BfxError as exc:
            _one_line(exc)


@pytest.mark.parametrize("kind", ["toml-array", "toml-table"])
def test_bfx_config_show_on_a_deeply_nested_file_prints_one_line_and_no_traceback(
    tmp_path: Path, kind: str
) -> None:
    from barfinex_cli.cli.main import app

    config = tmp_path / "bfx.toml"
    config.write_text(_nested(100_000, kind))
    result = CliRunner().invoke(app, ["--config", str(config), "config", "show"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "nested too deeply" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


@SETTINGS
@given(
    frame=st.one_of(
        JSON.map(json.dumps),
        st.dictionaries(st.sampled_from(["subscribe", "unsubscribe", "ping"]), JSON).map(
            json.dumps
        ),
        st.text(max_size=500),
        st.builds(_nested, st.sampled_from([5_000, 200_000]), st.just("json")),
        st.builds(lambda d: json.dumps({"ping": json.loads(_nested(d, "json"))}),
                  st.sampled_from([500, 900])),
    )
)  # fmt: skip
def test_a_hostile_websocket_frame_gets_json_error_frames_and_the_client_stays(frame: str) -> None:
    client = WsClient(10)
    frames = apply_message(client, frame)
    assert frames, frame[:100]
    for answer in frames:
        json.dumps(answer)  # what the endpoint sends: it must encode
    assert len(client.patterns) <= 100


def _envelope_like() -> st.SearchStrategy[bytes]:
    fields = st.fixed_dictionaries(
        {"type": st.sampled_from(["market.candle", "detector.signal", 7, None])},
        optional={"id": JSON, "payload": JSON, "ts": JSON, "source": JSON, "schema": JSON},
    )
    return st.one_of(
        fields.map(lambda d: json.dumps(d).encode()),
        JSON.map(lambda d: json.dumps(d).encode()),
        st.binary(max_size=500),
        st.builds(_nested, st.sampled_from([5_000, 200_000]), st.just("json")).map(str.encode),
        st.just(b'{"type": "market.candle", "payload": "' + b"x" * 400_000 + b'"}'),
    )


@SETTINGS
@given(data=_envelope_like(), typed=st.booleans())
def test_a_hostile_bus_message_is_a_malformed_event_with_a_reason(data: bytes, typed: bool) -> None:
    try:
        decode(data, "market.candle" if typed else None, max_bytes=256 * 1024)
    except MalformedEvent as exc:
        assert exc.reason and "\n" not in exc.reason


async def test_hostile_bus_messages_are_dead_lettered_and_the_consumer_keeps_going(
    redis_bus: Bus,
) -> None:
    from bus.test_semantics import candle, drain

    hostile: list[bytes] = [
        _nested(200_000, "json").encode(),
        b'{"type": "market.candle", "id": {"a": [1, 2]}, "payload": 7}',
        b'{"type": "detector.signal", "id": "x"}',
        json.dumps({"type": "market.candle", "payload": json.loads(_nested(600, "json"))}).encode(),
        b'{"type": "market.candle", "payload": "' + b"x" * 300_000 + b'"}',
        b"\xff\xfe\x00garbage",
    ]
    consumer = await redis_bus.consumer("g", "c1", ["market.candle"], start="0")
    for data in hostile:
        await redis_bus.publish_raw("market.candle", data)
    good = candle(1)
    await redis_bus.publish(good)
    got = await drain(consumer)
    assert [d.event.id for d in got] == [good.id]
    letters = await redis_bus.dead_letters()
    assert len(letters) == len(hostile) == consumer.dead_lettered
    for letter, data in zip(letters, hostile, strict=True):
        assert letter.error and "\n" not in letter.error
        assert letter.type == "market.candle"
        assert letter.size == len(data)
    assert "over the limit" in letters[4].error
    later = candle(2)
    await redis_bus.publish(later)
    assert [d.event.id for d in await drain(consumer)] == [later.id]  # still consuming


def test_nesting_past_each_parsers_depth_is_one_line_each(tmp_path: Path) -> None:
    """The regressions: each of these was a RecursionError or MemoryError traceback."""
    strategy = tmp_path / "deep.py"
    strategy.write_text("x = " + "-" * 100_000 + "1")  # the 3.11 parser: MemoryError, no message
    with pytest.raises(BfxError, match=r"deep\.py:1: nested too deeply"):
        load_strategy(strategy)
    strategy.write_bytes(b"x = 1\x00")  # 3.11: ValueError from compile()
    with pytest.raises(BfxError, match="null bytes"):
        load_strategy(strategy)
    policy = tmp_path / "policies.toml"
    policy.write_text(_nested(5_000, "toml-array"))
    with pytest.raises(BfxError, match="nested too deeply"):
        load_policies(policy)
    config = tmp_path / "bfx.toml"
    config.write_text(_nested(5_000, "toml-table"))
    with pytest.raises(BfxError, match="nested too deeply"):
        load_settings(config, home=tmp_path)
    with pytest.raises(MalformedEvent, match="nested too deeply"):
        decode(_nested(5_000, "json"), None)
    [frame] = apply_message(WsClient(10), _nested(5_000, "json"))
    assert "nested too deeply" in frame["error"]
