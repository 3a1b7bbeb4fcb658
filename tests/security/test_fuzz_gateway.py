"""A bounded schemathesis pass: every route of the gateway, and the advisor and inspector behind it.

A real stack (provider gateway, detector, advisor, inspector on loopback ports) takes generated
requests for every operation of the gateway's OpenAPI document and of the role APIs reached through
`/proxy/{app}/...`: no answer is a 5xx or carries a traceback, and every role is still running
afterwards. Derandomised and a few examples per operation, so it stays well under a minute; the
long pass is `benchmarks/fuzz_gateway.py`.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from barfinex_cli.advisor.api import api_app as advisor_app
from barfinex_cli.inspector.api import api_app as inspector_app
from barfinex_cli.runtime.settings import load_settings
from security.fuzzing import fuzz, starlette_openapi
from security.stack import running_stack

EXAMPLES = 4


def test_no_generated_request_gets_a_500_or_a_traceback_and_no_role_crashes(
    tmp_path: Path, namespace: str
) -> None:
    settings = load_settings(home=tmp_path / "home", namespace=namespace, bus="memory", token="t0k")
    with running_stack(settings, tmp_path) as stack:
        auth = {"Authorization": f"Bearer {stack.token}"}
        document = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=10).json()
        run = stack.run
        reports = [
            fuzz("gateway", document, stack.gateway_url, stack.token, max_examples=EXAMPLES),
            fuzz(
                "advisor (proxied)",
                starlette_openapi("advisor", advisor_app(run.advisors[0]).routes),
                f"{stack.gateway_url}/proxy/advisor",
                stack.token,
                max_examples=EXAMPLES,
            ),
            fuzz(
                "inspector (proxied)",
                starlette_openapi("inspector", inspector_app(run.inspectors[0]).routes),
                f"{stack.gateway_url}/proxy/inspector",
                stack.token,
                max_examples=EXAMPLES,
            ),
        ]
        for url in (stack.gateway_url + "/api/v1/health", stack.advisor_url + "/health"):
            assert httpx.get(url, headers=auth, timeout=10).status_code == 200, url
        assert httpx.get(stack.inspector_url + "/health", timeout=10).status_code in (200, 503)
        tasks_alive = run.provider.runtime is not None
    for r in reports:
        print(f"{r.surface}: {r.operations} operations, {r.cases} cases, statuses {r.statuses}")
    failures = [line for r in reports for line in r.failures]
    assert failures == []
    assert tasks_alive
    by_surface = {r.surface: (r.operations, r.cases) for r in reports}
    assert by_surface["gateway"][0] >= 25, by_surface  # every REST route, the proxy, /metrics
    assert by_surface["advisor (proxied)"][0] == 7 and by_surface["inspector (proxied)"][0] == 10
    assert all(cases >= operations for operations, cases in by_surface.values()), by_surface
