"""`bfx advisor`: run the advisor role, and explain one of its decisions from the audit store.

`run` starts the eight-stage pipeline as a service through `kernel.launch.serve`; `explain` needs
no running service: it reads the decision and its stages' events from `audit.db`. `train` and
`models` (from `cli.advisor_train`) are mounted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfinex_cli.cli import advisor_train
from barfinex_cli.cli.options import ClockOpt, NoRegisterOpt, ProviderOpt, role_settings

if TYPE_CHECKING:
    from barfinex_cli.contracts.envelope import Envelope

app = typer.Typer(
    help=(
        "Advisor role: the 8-stage decision pipeline on every detector signal.\n\n"
        "Examples:\n\n"
        "  bfx advisor run\n\n"
        "  bfx advisor run --llm-model ollama/llama3.1 --llm-api-base http://127.0.0.1:11434\n\n"
        "  bfx advisor explain 4f2a9c1d7e8b --json"
    ),
    no_args_is_help=True,
)

STAGES = ("context", "quality", "ml", "conviction", "calibration", "llm", "validation", "intent")
STAGE_OF = {
    "advisor.context.fetched": "context", "advisor.quality.passed": "quality",
    "advisor.quality.blocked": "quality", "advisor.ml.scored": "ml", "advisor.ml.skipped": "ml",
    "advisor.conviction.scored": "conviction", "advisor.regime.detected": "calibration",
    "advisor.regime.rotated": "calibration", "advisor.conviction.calibrated": "calibration",
    "advisor.llm.requested": "llm", "advisor.llm.responded": "llm", "advisor.llm.failed": "llm",
    "advisor.llm.skipped": "llm", "advisor.llm.hallucination": "llm",
    "advisor.model.switched": "llm", "advisor.validation.passed": "validation",
    "advisor.validation.blocked": "validation", "advisor.sizing.computed": "intent",
    "advisor.attribution": "intent", "advisor.decision": "intent",
}  # fmt: skip


@app.command("run")
def run(
    ctx: typer.Context,
    provider: ProviderOpt = None,
    instance: Annotated[str | None, typer.Option(help="Instance name [advisor].")] = None,
    host: Annotated[str | None, typer.Option(help="Address of the REST API.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of the REST API; the next free one is taken [8009].")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Trained model file (default: the rule scorer).")
    ] = None,
    llm_model: Annotated[
        list[str] | None,
        typer.Option(help="litellm model, tried in the order given (repeat the option)."),
    ] = None,
    llm_api_base: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL (llama.cpp, Ollama, vLLM).")
    ] = None,
    no_register: NoRegisterOpt = False,
    clock: ClockOpt = None,
) -> None:
    """Decide every detector.signal through the eight stages and publish advisor.decision.

    Defaults come from `[advisor]` in bfx.toml (see docs/advisor.md); LLM keys only from the
    environment (BFX_ADVISOR__LLM_API_KEY, or the provider's own variable such as
    OPENAI_API_KEY). With no --llm-model the LLM stage is skipped and says so. Stop with Ctrl-C.

    Examples: bfx advisor run --model ~/.bfx/models/momentum.model --port 8009
    """
    import asyncio

    from barfinex_cli.advisor.service import Advisor
    from barfinex_cli.cli.render import err
    from barfinex_cli.kernel.launch import serve
    from barfinex_cli.kernel.parts import Kernel

    settings = role_settings(ctx)
    config = settings.advisor.with_overrides(
        provider_url=provider,
        instance=instance,
        host=host,
        port=port,
        model=model,
        llm_models=tuple(llm_model) if llm_model else None,
        llm_api_base=llm_api_base,
        join_registry=False if no_register else None,
        clock=clock,
    )

    async def build(kernel: Kernel) -> Advisor:
        return await kernel.advisor(config)

    def announce(advisor: Advisor) -> None:
        llm = ", ".join(config.llm_models) or "none (stage skipped)"
        err().print(
            f"advisor {advisor.instance} up: scorer {advisor.pipeline.scorer.name}, LLM {llm}, "
            f"{len(advisor.context.series())} series warmed, {advisor.clock.kind} clock, "
            f"API {advisor.api_url}"
        )

    last, decisions = asyncio.run(serve(settings, build, announce))
    err().print(
        f"advisor {last.instance} stopped after {last.signals_seen} signals, {decisions} decisions"
    )


@app.command("explain")
def explain(
    ctx: typer.Context,
    decision_id: Annotated[
        str,
        typer.Argument(help="An advisor.decision (or rejection, or signal) id, or its last 8+."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the eight stages of one decision: each outcome, its reason and its numbers.

    Reads the audit store; the advisor need not be running. Give the id of an advisor.decision,
    an advisor.decision.rejected, or the detector.signal it decided.

    Examples: bfx advisor explain 01a2105c-df3a-7000-8a1b-d346e336bd8a --json
    """
    from barfinex_cli.cli.events import open_store
    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.errors import NotFound

    with open_store(ctx) as store:
        event = store.get(decision_id)
        signal_id = getattr(event.payload, "signal_id", None)
        if event.type == "detector.signal":
            signal_id = event.id
        if signal_id is None or not event.type.startswith(("advisor.", "detector.signal")):
            raise NotFound(
                f"{event.id} is a {event.type}, not an advisor decision — give the id of an "
                "advisor.decision, a rejection or the signal it decided"
            )
        events = [
            e for e in store.trace(event.id)
            if e.type.startswith("advisor.") and getattr(e.payload, "signal_id", None) == signal_id
        ]  # fmt: skip
    final = ("advisor.decision", "advisor.decision.rejected", "advisor.signal.dropped")
    ends = [e for e in events if e.type in final]
    if not ends:
        raise NotFound(
            f"signal {signal_id} has no advisor decision in the audit store yet — is "
            "`bfx advisor run` consuming, and `bfx events record` recording?"
        )
    end = ends[-1]
    rows = _stages(end, events)
    if as_json:
        print_json({
            "decision": end.model_dump(mode="json", by_alias=True), "signal_id": signal_id,
            "stages": rows, "events": [e.model_dump(mode="json", by_alias=True) for e in events],
        })  # fmt: skip
        return
    from rich.table import Table

    console = out()
    console.print(f"[bold]{end.type}[/] {end.id}  signal {signal_id}")
    payload = end.payload
    if end.type == "advisor.decision":
        console.print(
            f"{payload.side} {payload.size} {payload.symbol} @ {payload.entry}  stop "
            f"{payload.stop}  take-profit {payload.take_profit}  conviction "
            f"{payload.conviction:.3f}"
        )
    else:
        console.print(f"stopped: {getattr(payload, 'reason', '')} {getattr(payload, 'detail', '')}")
    table = Table("stage", "outcome", "detail", "events")
    for row in rows:
        style = {"passed": "green", "blocked": "red", "skipped": "yellow"}.get(row["outcome"], "")
        outcome = f"[{style}]{row['outcome']}[/]" if style else row["outcome"]
        table.add_row(row["stage"], outcome, row["detail"], ", ".join(row["events"]))
    console.print(table)


def _stages(end: Envelope[Any], events: list[Envelope[Any]]) -> list[dict[str, Any]]:
    """Return the eight stages with their outcome (not run after a block) and their events."""
    recorded = {s.stage: s for s in getattr(end.payload, "stages", [])}
    rows: list[dict[str, Any]] = []
    for stage in STAGES:
        outcome = recorded.get(stage)
        rows.append({
            "stage": stage,
            "outcome": outcome.outcome if outcome is not None else "not run",
            "detail": outcome.detail if outcome is not None else "",
            "events": [e.type.removeprefix("advisor.") for e in events
                       if STAGE_OF.get(e.type) == stage],
        })  # fmt: skip
    return rows


app.command("train")(advisor_train.train)
app.command("models")(advisor_train.models)
