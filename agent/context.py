"""What a step sees while it runs: the node, the mode, the journal and the way to provisiond."""

from __future__ import annotations

from typing import Any, Callable

from agent.journal import Journal


class StepContext:
    def __init__(self, *, hostname: str, os_family: str, journal: Journal, client: Any,
                 dry_run: bool = False, service_manager: Any | None = None,
                 progress: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None):
        import time

        self.hostname = hostname
        self.os_family = os_family
        self.journal = journal
        self.client = client
        self.dry_run = dry_run
        self.service_manager = service_manager
        self.progress = progress or (lambda message: None)
        self.sleep = sleep or time.sleep
        self.clock = clock or time.time  # wall clock: barrier starts are journaled across reboots
