"""The long schemathesis pass: many examples per operation of the gateway and the proxied roles.

The test suite runs a bounded pass (`tests/security/test_fuzz_gateway.py`, a few examples per
operation); this runs the same harness with many more and prints, per surface, the operations,
the requests sent, the statuses seen and every 5xx or traceback (there must be none). Exit code 1
if any was found.

    python benchmarks/fuzz_gateway.py                # 100 examples per operation
    python benchmarks/fuzz_gateway.py --examples 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from barfinex_cli.advisor.api import api_app as advisor_app
from barfinex_cli.inspector.api import api_app as inspector_app
from barfinex_cli.runtime.settings import load_settings
from security.fuzzing import FuzzReport, fuzz, starlette_openapi
from security.stack import running_stack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per operation")
    args = parser.parse_args()
    reports: list[FuzzReport] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        settings = load_settings(
            home=tmp_path / "home", namespace=f"fuzz-{uuid.uuid4().hex[:8]}", bus="memory",
            token="fuzz-token",
        )  # fmt: skip
        with running_stack(settings, tmp_path) as stack:
            run = stack.run
            surfaces = [
                ("gateway", httpx.get(f"{stack.gateway_url}/openapi.json").json(), ""),
                ("advisor (proxied)",
                 starlette_openapi("advisor", advisor_app(run.advisors[0]).routes),
                 "/proxy/advisor"),
                ("inspector (proxied)",
                 starlette_openapi("inspector", inspector_app(run.inspectors[0]).routes),
                 "/proxy/inspector"),
            ]  # fmt: skip
            for name, document, prefix in surfaces:
                started = time.perf_counter()
                report = fuzz(
                    name, document, stack.gateway_url + prefix, stack.token,
                    max_examples=args.examples,
                )  # fmt: skip
                took = time.perf_counter() - started
                reports.append(report)
                statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items()))
                print(
                    f"{name}: {report.operations} operations, {report.cases} requests in "
                    f"{took:.1f} s; statuses {statuses}; 5xx/tracebacks {len(report.failures)}"
                )
                for line in report.failures:
                    print(f"  FAIL {line}")
            alive = [
                httpx.get(stack.gateway_url + "/api/v1/health").status_code == 200,
                httpx.get(stack.advisor_url + "/health").status_code == 200,
            ]
    total = sum(r.cases for r in reports)
    failures = sum(len(r.failures) for r in reports)
    print(f"total: {total} requests over {sum(r.operations for r in reports)} operations; "
          f"5xx/tracebacks {failures}; roles alive after: {all(alive)}")  # fmt: skip
    return 1 if failures or not all(alive) else 0


if __name__ == "__main__":
    raise SystemExit(main())
