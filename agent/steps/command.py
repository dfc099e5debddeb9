"""command: run a program unless `creates` exists or `unless` succeeds; bounded, retried."""

from __future__ import annotations

import os
from typing import Any

from agent import system
from agent.steps import Outcome, StepFailed


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    command = step["argv"] if step["argv"] is not None else step["shell"]
    shown = command if isinstance(command, str) else " ".join(command)
    env = {str(key): str(value) for key, value in step["env"].items()}
    if step["creates"] and os.path.exists(step["creates"]):
        return Outcome(False, f"skipped: {step['creates']} exists")
    if step["unless"] and system.run(step["unless"], timeout=step["timeout"], env=env).ok:
        return Outcome(False, "skipped: the unless-check succeeds")
    if ctx.dry_run:
        return Outcome(step["changes"], f"would run: {shown}")
    attempts = step["retries"] + 1
    result = None
    for attempt in range(1, attempts + 1):
        result = system.run(command, timeout=step["timeout"], env=env, what=shown)
        if result.ok:
            break
        if attempt < attempts:
            ctx.progress(f"attempt {attempt} of {attempts} failed (exit {result.returncode}); "
                         f"again in {step['delay']:g} s")
            ctx.sleep(step["delay"])
    assert result is not None
    if not result.ok:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        raise StepFailed(f"{shown}: exit status {result.returncode}{tries}",
                         system.tail(result.stderr or result.stdout))
    return Outcome(step["changes"], "ran" + (f" (attempt {attempt})" if attempt > 1 else ""))
