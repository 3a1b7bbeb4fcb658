"""LLM synthesis through litellm: a list of models tried in order, a JSON answer, a fact check.

The prompt carries the structured context of the signal (prices, spread, ATR, features, the
detector's and the model's scores, the regime) as JSON, and asks for JSON back: a directional
`bias` (long, short or neutral), a `sizing_multiplier` in [0, 2] and the `reasoning`. Models are
tried in order, each `retries + 1` times with a `timeout`; moving to the next one is an
`advisor.model.switched`. Any OpenAI-compatible server (llama.cpp server, Ollama, vLLM) is reached
through `api_base` (see docs/advisor.md).

Nothing the model says is taken on trust. Every number its reasoning cites must be one of the
context's numbers (within `tolerance_pct`, a percentage read either way), and a bias against the
signal when every piece of evidence (the detector's side, the model's probability, the 20-candle
return) backs the signal is flagged too: either is an `advisor.llm.hallucination`, and the answer's
contribution is discarded. With no model configured, or none answering usably, the stage says so
(`advisor.llm.skipped`) — it never invents an answer.

`litellm` takes seconds to import, so it is imported on the first call, with its cost map read
from the package (`LITELLM_LOCAL_MODEL_COST_MAP`) instead of fetched from the internet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from barfinex_cli.advisor.stages.base import Events, SignalView, passed, skipped
from barfinex_cli.contracts.advisor import (
    Bias,
    LlmFailed,
    LlmHallucinated,
    LlmRequested,
    LlmResponded,
    LlmSkipped,
    ModelSwitched,
    StageOutcome,
)
from barfinex_cli.contracts.ids import uuid7
from barfinex_cli.contracts.types import Payload

log = logging.getLogger("bfx.advisor.llm")

SYSTEM = (
    "You are a cautious trading analyst. You get the structured context of one trading signal "
    "as JSON. Answer with one JSON object and nothing else: "
    '{"bias": "long" | "short" | "neutral", "sizing_multiplier": number from 0 to 2 '
    '(1 keeps the planned size), "reasoning": "two or three sentences"}. '
    "Cite only numbers that appear in the context; do not compute new ones."
)

ErrorKind = Literal["timeout", "unreachable", "provider_error", "unparseable"]
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|(?<![\w.])[-+]?\d*\.?\d+%?")


class Answer(BaseModel):
    """The JSON a model must answer with."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    bias: Bias
    sizing_multiplier: float = Field(ge=0.0, le=2.0)
    reasoning: str = Field(max_length=4000)


@dataclass(frozen=True, slots=True)
class LlmOptions:
    """How the stage calls models (from `AdvisorConfig`)."""

    models: tuple[str, ...] = ()
    api_base: str | None = None
    api_key: str | None = None
    timeout_s: float = 20.0
    retries: int = 1
    temperature: float = 0.0
    tolerance_pct: float = 1.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    """More keyword arguments for `litellm.acompletion` (e.g. `mock_response` in tests)."""


@dataclass(frozen=True, slots=True)
class Synthesis:
    """What the stage concluded: its outcome, events, and the kept answer if any."""

    outcome: StageOutcome
    events: Events
    answer: Answer | None = None
    model: str | None = None


class LlmFailure(Exception):
    """One model call that gave no usable answer."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def numbers_in(text: str) -> list[tuple[float, bool]]:
    """Return every number written in `text`, and whether a % sign followed it."""
    found: list[tuple[float, bool]] = []
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        percent = token.endswith("%")
        try:
            value = float(token.rstrip("%").replace(",", ""))
        except ValueError:
            continue
        found.append((value, percent))
    return found


def _close(claimed: float, actual: float, tolerance_pct: float) -> bool:
    if claimed == actual:
        return True
    scale = max(abs(actual), 1e-12)
    if abs(claimed - actual) <= scale * tolerance_pct / 100:
        return True
    # a number rounded to the digits it shows: 0.0123 cited as 0.012
    text = repr(claimed)
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return abs(claimed - actual) <= 0.5 * 10**-decimals and decimals >= 1


def unsupported_numbers(
    text: str, facts: Mapping[str, float], tolerance_pct: float, allowed: tuple[float, ...] = ()
) -> list[float]:
    """Return the numbers of `text` that match no fact (a `x%` may match x or x/100)."""
    values = [v for v in facts.values() if math.isfinite(v)] + list(allowed)
    bad: list[float] = []
    for number, percent in numbers_in(text):
        candidates = (number, number / 100) if percent else (number,)
        if not any(_close(c, v, tolerance_pct) for c in candidates for v in values):
            bad.append(number)
    return bad


def against_all_evidence(bias: Bias, evidence: Mapping[str, int]) -> bool:
    """Tell whether `bias` opposes every piece of evidence (each +1 long, -1 short, 0 none)."""
    if bias == "neutral":
        return False
    side = 1 if bias == "long" else -1
    votes = [v for v in evidence.values() if v != 0]
    return bool(votes) and all(v == -side for v in votes)


def parse_answer(text: str) -> Answer:
    """Parse a model's reply as the `Answer` JSON (a fenced code block is unwrapped).

    Raises:
        LlmFailure: the reply is not that JSON.
    """
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body.split("\n", 1)[1] if "\n" in body else body
    try:
        return Answer.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        preview = " ".join(text.split())[:80]
        raise LlmFailure(
            "unparseable", f"not the answer JSON ({where}: {first['msg']}): {preview!r}"
        ) from None


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


class LlmStage:
    """Stage 6: ask the configured models in order; keep an answer only if it checks out."""

    def __init__(self, options: LlmOptions) -> None:
        self.options = options
        self.calls = 0

    @property
    def configured(self) -> bool:
        return bool(self.options.models)

    def not_configured(self, view: SignalView) -> Synthesis:
        """Return the stage's answer when no model is configured: skipped, and why."""
        detail = "no LLM model configured ([advisor] llm_models)"
        skip = LlmSkipped(signal_id=view.id, reason="not_configured", detail=detail)
        return Synthesis(skipped("llm", detail), (skip,))

    async def synthesize(
        self,
        view: SignalView,
        context: Mapping[str, Any],
        facts: Mapping[str, float],
        evidence: Mapping[str, int],
    ) -> Synthesis:
        """Run the stage for one signal.

        Args:
            view: The signal.
            context: The structured context the prompt carries (JSON-able).
            facts: Every number of the context by name: what a cited number must match.
            evidence: Directional evidence by name (+1 long, -1 short, 0 none).
        """
        if not self.configured:
            return self.not_configured(view)
        opts = self.options
        prompt = json.dumps(context, sort_keys=True, default=str)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        events: list[Payload] = []
        attempts = opts.retries + 1
        last_error = ""
        for index, model in enumerate(opts.models):
            failures = 0
            for attempt in range(1, attempts + 1):
                request_id = uuid7()
                events.append(
                    LlmRequested(
                        signal_id=view.id,
                        request_id=request_id,
                        model=model,
                        attempt=attempt,
                        prompt_chars=len(prompt),
                        prompt_sha256=digest,
                    )
                )
                start = time.perf_counter()
                try:
                    text, tokens = await self._complete(model, messages)
                    answer = parse_answer(text)
                except LlmFailure as exc:
                    failures += 1
                    last_error = f"{model}: {exc}"
                    more = attempt < attempts or index + 1 < len(opts.models)
                    log.warning(
                        "llm call failed",
                        extra={"model": model, "error": exc.kind, "detail": str(exc)},
                    )
                    events.append(
                        LlmFailed(
                            signal_id=view.id,
                            request_id=request_id,
                            model=model,
                            error=exc.kind,
                            message=str(exc)[:500],
                            attempt=attempt,
                            will_retry=more,
                        )
                    )
                    continue
                latency = (time.perf_counter() - start) * 1000
                return self._judge(
                    view, events, request_id, model, answer, latency, tokens, facts, evidence
                )
            if index + 1 < len(opts.models):
                events.append(
                    ModelSwitched(
                        signal_id=view.id,
                        kind="llm",
                        previous=model,
                        current=opts.models[index + 1],
                        reason=last_error[:300],
                        failures=failures,
                    )
                )
        detail = f"no model gave a usable answer (last: {last_error})"[:500]
        log.warning("llm stage skipped", extra={"signal": view.id, "detail": detail})
        events.append(LlmSkipped(signal_id=view.id, reason="unavailable", detail=detail))
        return Synthesis(skipped("llm", detail), tuple(events))

    def _judge(
        self,
        view: SignalView,
        events: list[Payload],
        request_id: str,
        model: str,
        answer: Answer,
        latency_ms: float,
        tokens: int,
        facts: Mapping[str, float],
        evidence: Mapping[str, int],
    ) -> Synthesis:
        """Check the answer against the context; keep it or discard it with the reason."""
        flags: list[LlmHallucinated] = []
        allowed = (answer.sizing_multiplier,)
        for number in unsupported_numbers(
            answer.reasoning, facts, self.options.tolerance_pct, allowed
        ):
            nearest = min(facts.items(), key=lambda kv: abs(kv[1] - number), default=None)
            actual = f"{nearest[0]}={nearest[1]:g}" if nearest else "no numbers in the context"
            flags.append(
                LlmHallucinated(
                    signal_id=view.id,
                    request_id=request_id,
                    model=model,
                    field="reasoning",
                    claimed=f"{number:g}",
                    actual=f"nearest fact {actual}",
                )
            )
        if against_all_evidence(answer.bias, evidence):
            backing = ", ".join(
                f"{k} {'long' if v > 0 else 'short'}" for k, v in evidence.items() if v
            )
            flags.append(
                LlmHallucinated(
                    signal_id=view.id,
                    request_id=request_id,
                    model=model,
                    field="bias",
                    claimed=answer.bias,
                    actual=f"all evidence says otherwise: {backing}",
                )
            )
        accepted = not flags
        events.append(
            LlmResponded(
                signal_id=view.id,
                request_id=request_id,
                model=model,
                bias=answer.bias,
                sizing_multiplier=answer.sizing_multiplier,
                reasoning=answer.reasoning[:2000],
                accepted=accepted,
                latency_ms=round(latency_ms, 3),
                completion_tokens=tokens,
            )
        )
        events.extend(flags)
        if not accepted:
            what = "; ".join(f"{f.field}: {f.claimed} ({f.actual})" for f in flags)
            log.warning("llm answer discarded", extra={"model": model, "flags": what})
            return Synthesis(
                skipped("llm", f"{model}'s answer discarded: {what}"[:500]),
                tuple(events),
                None,
                model,
            )
        detail = f"{model}: {answer.bias}, sizing x{answer.sizing_multiplier:g}"
        return Synthesis(passed("llm", detail), tuple(events), answer, model)

    async def _complete(self, model: str, messages: list[dict[str, str]]) -> tuple[str, int]:
        """Call one model once; return its text and completion tokens, or raise `LlmFailure`."""
        opts = self.options
        litellm = await asyncio.to_thread(_litellm) if self.calls == 0 else _litellm()
        self.calls += 1
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "timeout": opts.timeout_s,
            "temperature": opts.temperature,
            "num_retries": 0,
            **opts.extra,
        }
        if opts.api_base:
            kwargs["api_base"] = opts.api_base
        if opts.api_key:
            kwargs["api_key"] = opts.api_key
        try:
            response = await asyncio.wait_for(litellm.acompletion(**kwargs), opts.timeout_s + 1)
        except (TimeoutError, litellm.Timeout) as exc:
            raise LlmFailure("timeout", f"no answer within {opts.timeout_s:g} s") from exc
        except litellm.APIConnectionError as exc:
            raise LlmFailure("unreachable", _first_line(exc)) from exc
        except Exception as exc:  # any provider refusal: bad key, unknown model, 5xx
            raise LlmFailure("provider_error", f"{type(exc).__name__}: {_first_line(exc)}") from exc
        try:
            text = response.choices[0].message.content or ""
        except (AttributeError, IndexError) as exc:
            raise LlmFailure("unparseable", "the reply has no message content") from exc
        usage = getattr(response, "usage", None)
        tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return text, tokens


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
