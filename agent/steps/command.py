"""command: run a program unless `creates` exists or `unless` succeeds; bounded, retried.

Each attempt is bounded by `timeout`; an attempt that runs out of it is killed and counts as a
failed attempt (retried while `retries` remain): on a loaded TCG lab node one `openstack` call
took over 120 s right after a reboot and the next one 40 s. An `unless` check that runs out of
time counts as not satisfied: the command (idempotent) runs.
"""

from __future__ import annotations

import os
from typing import Any

from agent import system
from agent.steps import Outcome, StepFailed, StepTimedOut


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    command = step["argv"] if step["argv"] is not None else step["shell"]
    shown = command if isinstance(command, str) else " ".join(command)
    env = {str(key): str(value) for key, value in step["env"].items()}
    if step["creates"] and os.path.exists(step["creates"]):
        return Outcome(False, f"skipped: {step['creates']} exists")
    if step["unless"] and _unless_holds(step["unless"], step["timeout"], env, ctx):
        return Outcome(False, "skipped: the unless-check succeeds")
    if ctx.dry_run:
        return Outcome(step["changes"], f"would run: {shown}")
    attempts = step["retries"] + 1
    result = None
    for attempt in range(1, attempts + 1):
        try:
            result = system.run(command, timeout=step["timeout"], env=env, what=shown)
        except StepTimedOut as exc:
            if attempt == attempts:
                tries = f", after {attempts} attempts" if attempts > 1 else ""
                raise StepTimedOut(exc.message + tries, exc.stderr) from None
            ctx.progress(f"attempt {attempt} of {attempts} timed out after {step['timeout']:g} s; "
                         f"again in {step['delay']:g} s")
            ctx.sleep(step["delay"])
            continue
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


def _unless_holds(check: str | list[str], timeout: float, env: dict[str, str], ctx: Any) -> bool:
    try:
        return system.run(check, timeout=timeout, env=env).ok
    except StepTimedOut:
        ctx.progress(f"the unless-check timed out after {timeout:g} s: taken as not satisfied")
        return False
