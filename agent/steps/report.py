"""report: tell provisiond this node has a named fact (what other nodes' barriers wait on)."""

from __future__ import annotations

from typing import Any

from agent.steps import Outcome


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    current = ctx.client.fact(step["fact"])
    if current is not None and current == step["value"]:
        return Outcome(False, f"{step['fact']} reported already")
    if ctx.dry_run:
        return Outcome(True, f"would report {step['fact']}")
    ctx.client.report_fact(step["fact"], step["value"])
    return Outcome(True, f"reported {step['fact']}")
