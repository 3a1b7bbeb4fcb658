"""LLM synthesis through litellm's real code path: its `mock_response`, and a loopback server.

The loopback server speaks the OpenAI chat-completions protocol (as llama.cpp server, Ollama and
vLLM do); the model name in the request picks its behaviour: a good answer, text that is not JSON,
an answer citing a number the context does not hold, or no answer until the test lets it answer
(so a timeout is proven by what was answered, not by a stopwatch).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from barfinex_cli.advisor.llm import (
    LlmOptions,
    LlmStage,
    against_all_evidence,
    numbers_in,
    parse_answer,
    unsupported_numbers,
)
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.contracts.advisor import (
    LlmFailed,
    LlmHallucinated,
    LlmResponded,
    LlmSkipped,
    ModelSwitched,
)
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.times import from_ms

SIGNAL = SignalView(
    "sig-1",
    SignalGenerated(
        strategy="momentum", instance="m", exchange="paper", symbol="BTC/USDT", timeframe="1m",
        candle_time=from_ms(1_704_067_200_000), direction="long", score=2.0, threshold=2.0,
        attribution=[],
    ),
)  # fmt: skip
FACTS = {"last_price": 43125.5, "atr": 212.4, "rsi_14": 61.2, "spread_pct": 0.02, "ret_20": 0.0123}
CONTEXT = {"symbol": "BTC/USDT", "numbers": FACTS}
EVIDENCE = {"detector": 1, "ml_probability": 1, "ret_20": 1}
GOOD: dict[str, Any] = {
    "bias": "long",
    "sizing_multiplier": 0.8,
    "reasoning": "Price 43,125.5 holds above the trend; RSI 61.2 is firm, ATR 212.4, 1.23% over "
    "20 candles.",
}
INVENTED = {**GOOD, "reasoning": "Price 45000 broke resistance with RSI 61.2."}


def _stage(*models: str, **options: Any) -> LlmStage:
    return LlmStage(LlmOptions(models=models, **options))


# -- the checks, on plain inputs ----------------------------------------------------------------


def test_numbers_are_read_with_thousands_separators_and_percent_signs() -> None:
    assert numbers_in("43,125.5 and 1.23% and -0.5, RSI 61") == [
        (43125.5, False), (1.23, True), (-0.5, False), (61.0, False),
    ]  # fmt: skip


def test_a_cited_number_matches_a_fact_within_tolerance_or_as_a_percentage() -> None:
    assert unsupported_numbers(GOOD["reasoning"], FACTS, 1.0) == [20.0]
    assert unsupported_numbers(GOOD["reasoning"], FACTS, 1.0, allowed=(20,)) == []
    assert unsupported_numbers("price 45000", FACTS, 1.0) == [45000.0]


def test_a_bias_is_against_all_evidence_only_when_every_vote_opposes_it() -> None:
    assert against_all_evidence("short", {"detector": 1, "ml": 1, "ret": 1})
    assert not against_all_evidence("short", {"detector": 1, "ml": -1})
    assert not against_all_evidence("neutral", {"detector": 1})
    assert not against_all_evidence("long", {"detector": 1})


def test_an_answer_in_a_code_fence_is_read_and_prose_is_refused() -> None:
    fenced = "```json\n" + json.dumps(GOOD) + "\n```"
    assert parse_answer(fenced).bias == "long"
    with pytest.raises(Exception, match="not the answer JSON"):
        parse_answer("I would go long here.")


# -- litellm's own mock_response ----------------------------------------------------------------


async def test_no_model_configured_skips_the_stage_and_says_why() -> None:
    result = await _stage().synthesize(SIGNAL, CONTEXT, FACTS, EVIDENCE)
    assert result.answer is None
    assert [type(e) for e in result.events] == [LlmSkipped]
    assert result.events[0].reason == "not_configured"  # type: ignore[attr-defined]


async def test_mock_response_good_answer_is_kept() -> None:
    allowed = {**FACTS, "window": 20}
    stage = _stage("gpt-4o-mini", extra={"mock_response": json.dumps(GOOD)})
    result = await stage.synthesize(SIGNAL, CONTEXT, allowed, EVIDENCE)
    assert result.outcome.outcome == "passed"
    assert result.answer is not None and result.answer.sizing_multiplier == 0.8
    responded = [e for e in result.events if isinstance(e, LlmResponded)]
    assert responded and responded[0].accepted


async def test_mock_response_with_an_invented_price_is_flagged_and_discarded() -> None:
    stage = _stage("gpt-4o-mini", extra={"mock_response": json.dumps(INVENTED)})
    result = await stage.synthesize(SIGNAL, CONTEXT, FACTS, EVIDENCE)
    assert result.answer is None and result.outcome.outcome == "skipped"
    flags = [e for e in result.events if isinstance(e, LlmHallucinated)]
    assert [(f.field, f.claimed) for f in flags] == [("reasoning", "45000")]
    assert "last_price=43125.5" in flags[0].actual


async def test_mock_response_bias_against_all_evidence_is_flagged() -> None:
    contrary = {"bias": "short", "sizing_multiplier": 1.0, "reasoning": "Looks toppy."}
    stage = _stage("gpt-4o-mini", extra={"mock_response": json.dumps(contrary)})
    result = await stage.synthesize(SIGNAL, CONTEXT, FACTS, EVIDENCE)
    assert result.answer is None
    flags = [e for e in result.events if isinstance(e, LlmHallucinated)]
    assert [f.field for f in flags] == ["bias"]


async def test_mock_response_that_is_not_json_fails_then_skips_never_invents() -> None:
    stage = _stage("gpt-4o-mini", retries=1, extra={"mock_response": "Go long, it is obvious."})
    result = await stage.synthesize(SIGNAL, CONTEXT, FACTS, EVIDENCE)
    failed = [e for e in result.events if isinstance(e, LlmFailed)]
    assert [(f.error, f.attempt, f.will_retry) for f in failed] == [
        ("unparseable", 1, True), ("unparseable", 2, False),
    ]  # fmt: skip
    assert isinstance(result.events[-1], LlmSkipped)
    assert result.events[-1].reason == "unavailable"
    assert result.answer is None


# -- an OpenAI-compatible server on loopback ----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    calls: list[str] = []
    answered: list[str] = []
    release = threading.Event()
    """Set by the test to let the "slow" model answer: until then it holds its reply."""

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = str(body["model"])
        type(self).calls.append(model)
        if model == "slow":
            type(self).release.wait(60)
        content = {
            "good": json.dumps(GOOD),
            "slow": json.dumps(GOOD),
            "malformed": '{"bias": "long", "reasoning": ',
            "inventive": json.dumps(INVENTED),
        }[model]
        reply = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17},
        }  # fmt: skip
        data = json.dumps(reply).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass
        type(self).answered.append(model)


@pytest.fixture
def server() -> Iterator[str]:
    """An OpenAI-compatible chat server on a free loopback port; yields its api_base."""
    _Handler.calls = []
    _Handler.answered = []
    _Handler.release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _local(api_base: str, *names: str, **options: Any) -> LlmStage:
    models = tuple(f"openai/{n}" for n in names)
    return _stage(*models, api_base=api_base, api_key="local", **options)


async def test_local_server_good_answer_is_kept(server: str) -> None:
    result = await _local(server, "good").synthesize(SIGNAL, CONTEXT, {**FACTS, "w": 20}, EVIDENCE)
    assert result.answer is not None and result.answer.bias == "long"
    assert result.model == "openai/good"
    responded = next(e for e in result.events if isinstance(e, LlmResponded))
    assert responded.completion_tokens == 7
    assert _Handler.calls == ["good"]


async def test_local_server_malformed_json_falls_back_to_the_next_model(server: str) -> None:
    stage = _local(server, "malformed", "good", retries=0)
    result = await stage.synthesize(SIGNAL, CONTEXT, {**FACTS, "w": 20}, EVIDENCE)
    kinds = [type(e).__name__ for e in result.events]
    assert kinds == ["LlmRequested", "LlmFailed", "ModelSwitched", "LlmRequested", "LlmResponded"]
    assert result.answer is not None and result.model == "openai/good"


async def test_local_server_hallucinated_number_is_discarded(server: str) -> None:
    result = await _local(server, "inventive").synthesize(SIGNAL, CONTEXT, FACTS, EVIDENCE)
    assert result.answer is None
    assert any(isinstance(e, LlmHallucinated) and e.claimed == "45000" for e in result.events)


async def test_local_server_timeout_then_the_fallback_model_answers(server: str) -> None:
    stage = _local(server, "slow", "good", retries=0, timeout_s=0.4)
    result = await stage.synthesize(SIGNAL, CONTEXT, {**FACTS, "w": 20}, EVIDENCE)
    assert "slow" not in _Handler.answered  # the slow model still holds its reply: not waited for
    failed = next(e for e in result.events if isinstance(e, LlmFailed))
    assert failed.error == "timeout" and failed.will_retry
    switched = next(e for e in result.events if isinstance(e, ModelSwitched))
    assert (switched.previous, switched.current) == ("openai/slow", "openai/good")
    assert result.answer is not None


async def test_an_unreachable_server_is_skipped_with_the_reason(server: str) -> None:
    dead = server.replace(server.split(":")[-1].split("/")[0], "9")  # the discard port: refused
    result = await _local(dead, "good", retries=0, timeout_s=2).synthesize(
        SIGNAL, CONTEXT, FACTS, EVIDENCE
    )
    failed = next(e for e in result.events if isinstance(e, LlmFailed))
    assert failed.error in ("unreachable", "provider_error")
    skipped = result.events[-1]
    assert isinstance(skipped, LlmSkipped) and skipped.reason == "unavailable"
