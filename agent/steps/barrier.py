"""barrier: wait until every named node has reported a fact; fail at once if one of them failed."""

from __future__ import annotations

from typing import Any

from agent.steps import Outcome, StepFailed


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    fact, nodes = step["fact"], step["nodes"]
    started = ctx.clock()
    last_missing = None
    while True:
        status = ctx.client.barrier(fact, nodes, step["id"])
        if status["state"] == "met":
            return Outcome(False, status["message"])
        if status["state"] == "failed":
            raise StepFailed(f"barrier {fact}: {status['message']}")
        if ctx.dry_run:
            return Outcome(False, f"would wait: {status['message']}")
        waited = ctx.clock() - started
        if waited >= step["timeout"]:
            raise StepFailed(f"barrier {fact} timed out after {waited:.0f} s: still missing from "
                             f"{', '.join(status['missing'])}")
        if status["missing"] != last_missing:
            ctx.progress(status["message"])
            last_missing = status["missing"]
        ctx.sleep(min(step["poll"], max(step["timeout"] - waited, 0.01)))
