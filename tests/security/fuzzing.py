"""Schemathesis over the gateway's own OpenAPI and over the role APIs it proxies, counted.

`fuzz` draws `max_examples` cases per operation of an OpenAPI document, valid ones and ones that
break the schema on purpose (derandomised: the same inputs every run), sends each to a real
server, and records every answer that is a 5xx or shows a Python traceback.

The advisor's and the inspector's APIs are plain Starlette apps without an OpenAPI document;
`starlette_openapi` writes one from their routes (every path and method, path parameters as
strings, any JSON as a POST body, a `limit` query string), so that they are fuzzed through the
provider's `/proxy/{app}/...` as a client would reach them.

Shared by the bounded pass in the test suite and the longer `benchmarks/fuzz_gateway.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

PROXY_ANSWERS = frozenset({502, 503})
"""What `/proxy/...` answers when the app is lost (an app the fuzzer registered stops beating)
or does not answer: documented states, counted in the statuses, not failures. A crash is a 500."""
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


@dataclass
class FuzzReport:
    """What one pass sent and what went wrong."""

    surface: str
    operations: int = 0
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    """One line per 5xx or traceback: operation, status, the start of the answer."""


def fuzz(
    surface: str,
    document: dict[str, Any],
    base_url: str,
    token: str,
    *,
    max_examples: int,
    skip: frozenset[tuple[str, str]] = frozenset(),
) -> FuzzReport:
    """Send `max_examples` generated cases to each operation of `document` at `base_url`."""
    report = FuzzReport(surface)
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in skip:
                continue
            report.operations += 1
            _run(operation, report, session, base_url, token, max_examples)
    finally:
        session.close()
    return report


def _run(
    operation: Any,
    report: FuzzReport,
    session: requests.Session,
    base_url: str,
    token: str,
    max_examples: int,
) -> None:
    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    def one(case: Any) -> None:
        # the token always rides along (a negative case may drop or spoil the header: the
        # guarantee tests cover that), so every case reaches the route behind the guard
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, "Authorization": f"Bearer {token}"}
        try:
            response = case.call(base_url=base_url, session=session, timeout=15)
        except requests.RequestException as exc:
            report.failures.append(f"{operation.label}: no answer ({type(exc).__name__})")
            return
        report.cases += 1
        status = response.status_code
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if status in PROXY_ANSWERS:  # the proxy's documented "app lost" / "did not answer"
            return
        if status >= 500 or "Traceback (most recent call last)" in response.text:
            body = response.text[:200].replace("\n", " ")
            report.failures.append(f"{operation.label} -> {status}: {body}")

    one()


def starlette_openapi(title: str, routes: list[Any]) -> dict[str, Any]:
    """Return an OpenAPI 3 document of a Starlette app's `routes` (methods, path parameters)."""
    paths: dict[str, Any] = {}
    for route in routes:
        path = _PARAM.sub(r"{\1}", route.path)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        item: dict[str, Any] = {}
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            operation: dict[str, Any] = {
                "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_')}",
                "parameters": [
                    *parameters,
                    {"name": "limit", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"default": {"description": "any answer"}},
            }
            if method == "POST":
                operation["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {"schema": {}}},
                }
            item[method.lower()] = operation
        paths[path] = item
    return {"openapi": "3.0.3", "info": {"title": title, "version": "1"}, "paths": paths}
