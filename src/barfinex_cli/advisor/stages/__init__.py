"""The eight stages of the advisor's pipeline, each a small function over typed, frozen inputs.

Every stage returns its `StageOutcome` (passed, blocked or skipped, with the reason), the event
payloads it emits, and the values the next stages read. Only the LLM stage waits on IO; the others
are pure, so each is tested alone on plain inputs and the whole run costs microseconds.

    1 context      advisor.context.fetched
    2 quality      advisor.quality.passed | blocked
    3 ml           advisor.ml.scored | skipped
    4 conviction   advisor.conviction.scored
    5 calibration  advisor.regime.detected, advisor.regime.rotated, advisor.conviction.calibrated
    6 llm          advisor.llm.requested | responded | failed | skipped | hallucination,
                   advisor.model.switched
    7 validation   advisor.validation.passed | blocked
    8 intent       advisor.sizing.computed, advisor.attribution, advisor.decision
"""
