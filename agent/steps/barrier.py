"""barrier: wait until every named node has reported a fact; fail at once if one of them failed.

The timeout counts from the first time this step started waiting, kept in the journal with the
wall clock: an agent restarted (crash, reboot) mid-wait goes on counting instead of starting over."""

from __future__ import annotations

from typing import Any

from agent.journal import step_digest
from agent.steps import Outcome, StepFailed


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    fact, nodes = step["fact"], step["nodes"]
    started = _wait_started(step, ctx)
    last_missing = None
    while True:
        status = ctx.client.barrier(fact, nodes, step["id"])
        if status["state"] == "met":
            return Outcome(False, status["message"])
        if status["state"] == "failed":
            _forget_start(step, ctx)
            raise StepFailed(f"barrier {fact}: {status['message']}")
        if ctx.dry_run:
            return Outcome(False, f"would wait: {status['message']}")
        waited = ctx.clock() - started
        if waited >= step["timeout"]:
            _forget_start(step, ctx)
            raise StepFailed(f"barrier {fact} timed out after {waited:.0f} s: still missing from "
                             f"{', '.join(status['missing'])}")
        if status["missing"] != last_missing:
            ctx.progress(status["message"])
            last_missing = status["missing"]
        ctx.sleep(min(step["poll"], max(step["timeout"] - waited, 0.01)))


def _wait_started(step: dict[str, Any], ctx: Any) -> float:
    """When this barrier (this id, these fields) first started waiting; recorded on first use."""
    if ctx.dry_run:
        return ctx.clock()
    started: dict[str, float] = dict(ctx.journal.get("barrier_started", {}))
    key = _key(step)
    if key not in started:
        started[key] = ctx.clock()
        ctx.journal.set("barrier_started", started)
    return started[key]


def _forget_start(step: dict[str, Any], ctx: Any) -> None:
    """After the step failed, a new run (the operator fixed the cause) waits the full timeout."""
    started: dict[str, float] = dict(ctx.journal.get("barrier_started", {}))
    if not ctx.dry_run and started.pop(_key(step), None) is not None:
        ctx.journal.set("barrier_started", started)


def _key(step: dict[str, Any]) -> str:
    return f"{step['id']}@{step_digest(step)}"
