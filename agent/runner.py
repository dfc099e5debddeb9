"""Runs a manifest: each step in order, journaled and reported; resumes after a crash.

Events sent for each step: `started`, then `ok`, `changed` or `failed` (with the message and
the tail of stderr). A step the journal has as done (same id, same fields) is not run again:
it is reported `ok` ("done earlier"), except a service step with a restart pending (a file it
watches changed after it last ran, e.g. a later manifest changed that file's content).
A failed step stops the run; the agent exits non-zero and provisiond marks the node failed
with the step and its message.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, TextIO

from agent.context import StepContext
from agent.journal import Journal
from agent.steps import Outcome, StepFailed, handler


class Runner:
    def __init__(self, manifest: dict[str, Any], ctx: StepContext, journal: Journal, client: Any,
                 out: TextIO = sys.stdout) -> None:
        self.manifest = manifest
        self.steps: list[dict[str, Any]] = manifest["steps"]
        self.ctx = ctx
        self.journal = journal
        self.client = client
        self.out = out
        # Secret values of this manifest: never printed, reported or journaled.
        self.mask = sorted((v for v in manifest.get("mask", []) if v), key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for value in self.mask:
            text = text.replace(value, "********")
        return text

    def _say(self, index: int, step: dict[str, Any], status: str, message: str = "") -> None:
        text = f"[{index}/{len(self.steps)}] {status:8} {step['id']}: {step['title']}"
        print(self._clean(text + (f" -- {message}" if message else "")), file=self.out, flush=True)

    def _event(self, index: int, step: dict[str, Any], status: str, message: str = "", stderr: str = "") -> None:
        if self.ctx.dry_run:
            return
        self.client.event({"status": status, "step": step["id"], "title": step["title"], "kind": step["kind"],
                           "index": index, "count": len(self.steps), "message": self._clean(message),
                           "stderr": self._clean(stderr)})

    def _done(self, step: dict[str, Any]) -> bool:
        """Journaled as done, and nothing happened since that makes it due again: a started
        service whose watched file changed after its last (re)start is not done."""
        if not self.journal.is_done(step):
            return False
        if step["kind"] == "service" and step.get("state") == "started":
            return not self.journal.changed_since_restart(step["name"], step.get("watch", []))
        return True

    def run(self) -> int:
        """0 when every step is ok/changed (in dry-run: when none would fail), else 1."""
        if not self.ctx.dry_run:
            self.client.event({"status": "run-started", "count": len(self.steps)})
        failures = 0
        for index, step in enumerate(self.steps, start=1):
            if not self.ctx.dry_run and self._done(step):
                self._say(index, step, "ok", "done earlier")
                self._event(index, step, "ok", "done earlier")
                continue
            if not self.ctx.dry_run:
                self.journal.record(step, "started")
            self._event(index, step, "started")
            self.ctx.progress = lambda message, i=index, s=step: self._event(i, s, "progress", message)
            try:
                outcome: Outcome = handler(step["kind"])(step, self.ctx)
            except StepFailed as exc:
                failures += 1
                self._say(index, step, "failed", exc.message + (f"\n{exc.stderr}" if exc.stderr else ""))
                if self.ctx.dry_run:
                    continue
                self.journal.record(step, "failed", self._clean(exc.message))
                self._event(index, step, "failed", exc.message, exc.stderr)
                return 1
            except Exception as exc:  # a bug or an unexpected system error: report it, do not hang
                failures += 1
                message = f"agent error in {step['kind']} step: {exc.__class__.__name__}: {exc}"
                self._say(index, step, "failed", message)
                if self.ctx.dry_run:
                    continue
                self.journal.record(step, "failed", self._clean(message))
                self._event(index, step, "failed", message, traceback.format_exc()[-2000:])
                return 1
            status = "changed" if outcome.changed else "ok"
            self._say(index, step, "would" if self.ctx.dry_run and outcome.changed else status, outcome.message)
            if not self.ctx.dry_run:
                self.journal.record(step, status, self._clean(outcome.message))
                self._event(index, step, status, outcome.message)
        if self.ctx.dry_run:
            return 1 if failures else 0
        self.client.event({"status": "run-finished", "count": len(self.steps)})
        return 0
