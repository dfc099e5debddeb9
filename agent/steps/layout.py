"""layout: send the node's real disk facts; provisiond compares them with the storage model."""

from __future__ import annotations

import json
from typing import Any

from agent import system
from agent.steps import Outcome, StepFailed

COMMANDS = {
    "lsblk": ["lsblk", "--json", "--bytes", "-o", "NAME,TYPE,SIZE,FSTYPE,MOUNTPOINT,PKNAME"],
    "vgs": ["vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "vg_name,vg_size,pv_count"],
    "lvs": ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,vg_name,lv_size"],
    "findmnt": ["findmnt", "--json", "-o", "TARGET,SOURCE,FSTYPE"],
}


def gather() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name, argv in COMMANDS.items():
        result = system.run(argv, timeout=60)
        if not result.ok:
            raise StepFailed(f"{' '.join(argv)}: exit status {result.returncode}", system.tail(result.stderr))
        try:
            facts[name] = json.loads(result.stdout)
        except ValueError:
            raise StepFailed(f"{argv[0]} did not print JSON", system.tail(result.stdout)) from None
    return facts


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    verdict = ctx.client.check_layout(gather())
    if verdict["problems"]:
        raise StepFailed("the disk layout does not match the storage model: " + "; ".join(verdict["problems"]))
    return Outcome(False, verdict.get("summary", "layout matches the storage model"))
