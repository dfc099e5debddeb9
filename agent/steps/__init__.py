"""Step kinds: one module per kind (agent/steps/<kind>.py), each with `apply(step, ctx)`.

`apply` makes the node match the step and returns an Outcome (changed or not, and what it did
or, in dry-run, would do). It raises StepFailed with a message and the tail of stderr when it
cannot. Every kind is idempotent: a second run changes nothing and returns changed=False.
In dry-run (`ctx.dry_run`) it changes nothing and reports what it would change.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

KINDS = ("packages", "file", "ini", "service", "command", "mount", "barrier", "report", "layout")


class Outcome:
    """What a step did: `changed` (or would change, in dry-run) and a short human message."""

    def __init__(self, changed: bool, message: str = "") -> None:
        self.changed = changed
        self.message = message

    def __repr__(self) -> str:
        return f"Outcome(changed={self.changed!r}, message={self.message!r})"


class StepFailed(Exception):
    """A step could not reach its target; `stderr` is the tail of what the command said."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stderr = stderr


class StepTimedOut(StepFailed):
    """A command ran out of its time bound and was killed (a slow moment, maybe: retryable)."""


def handler(kind: str) -> Callable[[dict[str, Any], Any], Outcome]:
    """The `apply` function of a step kind."""
    if kind not in KINDS:
        raise StepFailed(f"this agent does not know step kind {kind!r} (it knows: {', '.join(KINDS)}); "
                         "update the agent")
    return importlib.import_module(f"agent.steps.{kind}").apply
