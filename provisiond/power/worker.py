"""A fan-out worker process: reads a job (JSON) on stdin, writes one JSON line per node.

Started by provisiond.power.fanout; each worker has its own pyghmi I/O thread and sessions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from provisiond.power.base import BmcTarget
from provisiond.power.fanout import PowerConfig, run_node


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    config = PowerConfig(**job["config"])
    targets = [BmcTarget(**t) for t in job["targets"]]
    action = job["action"]
    out = sys.stdout.buffer
    lock = threading.Lock()

    def one(target: BmcTarget) -> None:
        result = run_node(target, action, config)
        line = json.dumps(dataclasses.asdict(result)).encode() + b"\n"
        with lock:
            out.write(line)
            out.flush()

    with ThreadPoolExecutor(max_workers=job["threads"]) as pool:
        list(pool.map(one, targets))
    # Abandoned pyghmi threads may still wait on dead BMCs: do not let them delay the exit.
    os._exit(0)


if __name__ == "__main__":
    main()
