"""A fan-out worker process: reads a job (JSON) on stdin, writes one JSON line per node.

Started by provisiond.power.fanout; each worker has its own pyghmi I/O thread and sessions.
All BMCs of the shard are first probed at once (one UDP packet each, no session, no pyghmi),
so silent BMCs cost one timeout in total instead of one per wave of `threads`; only those
that answer take a place among the `threads` pyghmi sessions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from provisiond.power.base import BmcTarget, NodeResult, PowerError
from provisiond.power.fanout import PowerConfig, run_node
from provisiond.power.ipmi import probe


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    config = PowerConfig(**job["config"])
    targets = [BmcTarget(**t) for t in job["targets"]]
    action = job["action"]
    out = sys.stdout.buffer
    lock = threading.Lock()

    def emit(result: NodeResult) -> None:
        line = json.dumps(dataclasses.asdict(result)).encode() + b"\n"
        with lock:
            out.write(line)
            out.flush()

    with ThreadPoolExecutor(max_workers=job["threads"]) as sessions:

        def check(target: BmcTarget) -> None:
            start = time.monotonic()
            if target.driver == "ipmi":
                try:
                    probe(target, config.timeout)
                except PowerError as exc:
                    emit(NodeResult(
                        name=target.name, action=action, ok=False, error_kind=str(exc.kind),
                        message=exc.detail, ipmi_calls=1,
                        elapsed=round(time.monotonic() - start, 3),
                    ))
                    return
            sessions.submit(lambda: emit(run_node(target, action, config)))

        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as probes:
            list(probes.map(check, targets))
    # Abandoned pyghmi threads may still wait on dead BMCs: do not let them delay the exit.
    os._exit(0)


if __name__ == "__main__":
    main()
