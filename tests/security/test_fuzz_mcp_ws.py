"""MCP tool arguments and WebSocket frames of any shape, sent to a real gateway over loopback.

Hypothesis draws arguments for every tool the MCP endpoint lists (the right names with values of
any JSON type, unknown names, nothing) and frames for `/ws` (any JSON, wrong verbs, binary, deep
nesting): each MCP call is answered 200 with a result or a readable tool error and no traceback;
each frame gets JSON error frames and the connection stays open for the next.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from provider.gateway_server import TOKEN
from security.stack import threaded_gateway

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
STRICT = st.recursive(  # what a JSON body can carry: no NaN or infinity
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}


def _rpc(http: httpx.Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    answer = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method,
                                     "params": params})  # fmt: skip
    assert answer.status_code == 200, answer.text[:300]
    assert "Traceback" not in answer.text, answer.text[:300]
    body: dict[str, Any] = answer.json()
    return body


def test_any_mcp_tool_arguments_get_a_result_or_a_readable_tool_error(tmp_path: Path) -> None:
    with (
        threaded_gateway(tmp_path, mcp_orders_enabled=True) as base,
        httpx.Client(base_url=base, headers=HEADERS, timeout=15) as http,
    ):
        tools = _rpc(http, "tools/list", {})["result"]["tools"]
        names = {t["name"]: sorted(t["inputSchema"].get("properties", {})) for t in tools}
        assert {"candles", "place_order", "call_role_tool"} <= set(names)
        calls = 0

        @SETTINGS
        @given(
            tool=st.sampled_from(sorted(names)),
            data=st.data(),
        )
        def call(tool: str, data: st.DataObject) -> None:
            nonlocal calls
            known = names[tool]
            arguments = data.draw(
                st.one_of(
                    st.fixed_dictionaries({}, optional={k: STRICT for k in known}),
                    st.dictionaries(st.sampled_from([*known, "extra", ""]), STRICT, max_size=6),
                    STRICT,
                )
            )
            body = _rpc(http, "tools/call", {"name": tool, "arguments": arguments})
            calls += 1
            if "error" in body:  # JSON-RPC level: arguments that are not an object
                assert body["error"]["message"]
                return
            result = body["result"]
            if result.get("isError"):
                assert result["content"][0]["text"]

        call()
        assert calls >= 60
        assert http.get("/api/v1/health").status_code == 200


def test_any_websocket_frame_gets_error_frames_and_the_connection_stays_open(
    tmp_path: Path,
) -> None:
    with threaded_gateway(tmp_path) as base:
        url = base.replace("http://", "ws://") + f"/ws?token={TOKEN}"
        with connect(url, proxy=None, max_size=2**24) as ws:
            sent = 0

            @SETTINGS
            @given(
                frame=st.one_of(
                    JSON.map(json.dumps),
                    st.dictionaries(
                        st.sampled_from(["subscribe", "unsubscribe", "ping", "x"]), JSON,
                        max_size=2,
                    ).map(json.dumps),
                    st.text(max_size=300),
                    st.binary(max_size=300),
                    st.sampled_from([5_000, 100_000]).map(lambda d: "[" * d + "]" * d),
                )
            )  # fmt: skip
            def send(frame: str | bytes) -> None:
                nonlocal sent
                ws.send(frame)
                sent += 1
                ws.send('{"ping": "after"}')  # the connection still answers after each frame
                while True:
                    answer = json.loads(ws.recv(timeout=10))
                    assert isinstance(answer, dict) and answer, answer
                    if answer == {"pong": "after"}:
                        return

            send()
            assert sent >= 60
