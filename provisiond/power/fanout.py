"""Run one power action over many nodes: worker processes, a global cap, a bound on everything.

pyghmi shares one I/O thread and its sessions per process, and about 190 dead BMCs in one
process stalled every call in it for over 90 s. So targets are split into shards of at most
`shard_size` BMCs, each handled by its own worker process (`python -m
provisiond.power.worker`, a fresh interpreter, so no pyghmi state is shared or inherited); at
most `concurrency` BMCs are talked to at once in total. The parent only waits: a worker that
overruns its bound is killed and its unfinished nodes are reported as timed out. Targets
(passwords included) go to a worker as JSON on its stdin, never on a command line; results come
back as JSON lines on its stdout.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provisiond.power.base import BmcTarget, ErrorKind, NodeResult, PowerDriver, PowerError

ACTIONS = ("status", "on", "off", "soft", "cycle", "reset", "pxe-boot")

# Driver calls per action at most (for the time bound): the action, boot flags, status checks.
_CALLS = {"status": 1, "pxe-boot": 4}

# Time a spawned worker may take to start (imports) before its nodes count as timed out.
WORKER_STARTUP = 20.0


@dataclass(frozen=True)
class PowerConfig:
    """Limits for power operations (all seconds unless said otherwise)."""

    timeout: float = 10.0  # each IPMI call, login included
    retries: int = 2  # extra attempts after a transient error (BMC busy)
    backoff: float = 0.5  # first pause before a retry, doubled each time
    concurrency: int = 64  # BMCs talked to at once, in total
    shard_size: int = 100  # BMCs per worker process

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError("timeout must be > 0, retries and backoff >= 0")
        if self.concurrency < 1 or self.shard_size < 1:
            raise ValueError("concurrency and shard_size must be at least 1")

    def call_bound(self) -> float:
        """Worst case for one driver call with its retries."""
        return (self.retries + 1) * self.timeout + self.backoff * (2**self.retries - 1)

    def node_bound(self, action: str) -> float:
        """Worst case for one action on one node."""
        return _CALLS.get(action, 2) * self.call_bound()


def make_driver(target: BmcTarget, config: PowerConfig) -> PowerDriver:
    """The driver named by the target (the inventory's bmc.driver): only IPMI so far."""
    if target.driver != "ipmi":
        raise PowerError(ErrorKind.PROTOCOL, f"{target.where}: no {target.driver!r} power driver")
    from provisiond.power.ipmi import IpmiDriver

    return IpmiDriver(
        target, timeout=config.timeout, retries=config.retries, backoff=config.backoff
    )


def perform(driver: PowerDriver, action: str, uefi: bool = False) -> tuple[str, str]:
    """Do `action` with the driver; return (power state afterwards, what was done)."""
    if action == "status":
        return driver.status(), ""
    if action == "pxe-boot":
        driver.set_boot_device("network", persist=False, uefi=uefi)
        mode = "uefi" if uefi else "bios"
        if driver.status() == "on":
            driver.cycle()
            done = f"one-time PXE ({mode}), power cycled"
        else:
            driver.on()
            done = f"one-time PXE ({mode}), powered on"
        return driver.status(), done
    if action not in ACTIONS:
        raise ValueError(f"unknown power action {action!r}; one of {', '.join(ACTIONS)}")
    getattr(driver, action)()
    done = {
        "on": "powered on",
        "off": "powered off",
        "soft": "ACPI shutdown requested",
        "cycle": "power cycled",
        "reset": "reset",
    }[action]
    return driver.status(), done


def run_node(target: BmcTarget, action: str, config: PowerConfig) -> NodeResult:
    """One action on one node, never raising: failures become a NodeResult with the cause."""
    start = time.monotonic()
    try:
        driver = make_driver(target, config)
    except PowerError as exc:
        return NodeResult(
            name=target.name, action=action, ok=False, error_kind=str(exc.kind), message=exc.detail
        )
    try:
        power, done = perform(driver, action, uefi=target.uefi)
        ok, kind, message = True, None, ""
    except PowerError as exc:
        power, done, ok, kind, message = None, "", False, str(exc.kind), exc.detail
    except Exception as exc:  # a driver bug must not take the other nodes down
        power, done, ok = None, "", False
        kind, message = str(ErrorKind.PROTOCOL), f"{type(exc).__name__}: {exc}"
    finally:
        driver.close()
    return NodeResult(
        name=target.name,
        action=action,
        ok=ok,
        power=power,
        done=done,
        error_kind=kind,
        message=message,
        ipmi_calls=getattr(driver, "attempts", 0),
        elapsed=round(time.monotonic() - start, 3),
    )


def shard(targets: Sequence[BmcTarget], size: int) -> list[list[BmcTarget]]:
    """Split targets into shards of at most `size` BMCs; names on one BMC stay together."""
    by_bmc: dict[tuple[str, int], list[BmcTarget]] = {}
    for target in targets:
        by_bmc.setdefault(target.key, []).append(target)
    shards: list[list[BmcTarget]] = []
    current: list[BmcTarget] = []
    bmcs = 0
    for group in by_bmc.values():
        if bmcs == size:
            shards.append(current)
            current, bmcs = [], 0
        current.extend(group)
        bmcs += 1
    if current:
        shards.append(current)
    return shards


def _failed(
    target: BmcTarget, action: str, kind: ErrorKind, message: str, elapsed: float
) -> NodeResult:
    return NodeResult(
        name=target.name,
        action=action,
        ok=False,
        error_kind=str(kind),
        message=f"{target.where}: {message}",
        elapsed=round(elapsed, 3),
    )


@dataclass
class _Worker:
    """A running worker process and what it owes."""

    proc: subprocess.Popen
    targets: list[BmcTarget]
    started: float
    bound: float
    buffer: bytes = b""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _start_worker(part: list[BmcTarget], action: str, config: PowerConfig, threads: int) -> _Worker:
    # start-up, the shard-wide presence probe, then the waves of `threads` sessions
    bound = (
        WORKER_STARTUP + config.timeout + math.ceil(len(part) / threads) * config.node_bound(action)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisiond.power.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    job = {
        "action": action,
        "threads": threads,
        "config": dataclasses.asdict(config),
        "targets": [dataclasses.asdict(t) for t in part],
    }
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the worker died at once; reported below as missing results
    os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
    return _Worker(proc, part, time.monotonic(), bound)


def run_action(
    targets: Sequence[BmcTarget],
    action: str,
    config: PowerConfig | None = None,
    on_result: Callable[[NodeResult], None] | None = None,
) -> list[NodeResult]:
    """Run `action` on every target; one result per target, in the targets' order.

    `on_result` is called (in this thread) as each node finishes, for progress displays.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown power action {action!r}; one of {', '.join(ACTIONS)}")
    config = config or PowerConfig()
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError("each target needs a unique name")
    if not targets:
        return []
    waiting = shard(targets, config.shard_size)
    processes = min(len(waiting), config.concurrency)
    threads = max(1, config.concurrency // processes)
    got: dict[str, NodeResult] = {}
    running: list[_Worker] = []
    selector = selectors.DefaultSelector()

    def record(result: NodeResult) -> None:
        if result.name not in got:
            got[result.name] = result
            if on_result is not None:
                on_result(result)

    def finish(worker: _Worker, why: str) -> None:
        selector.unregister(worker.proc.stdout)
        running.remove(worker)
        worker.stop()
        elapsed = time.monotonic() - worker.started
        for target in worker.targets:
            if target.name not in got:
                if why == "timeout":
                    record(
                        _failed(
                            target,
                            action,
                            ErrorKind.TIMEOUT,
                            f"no result within {worker.bound:.0f} s (worker stopped)",
                            elapsed,
                        )
                    )
                else:
                    record(_failed(target, action, ErrorKind.INTERNAL, why, elapsed))

    try:
        while waiting or running:
            while waiting and len(running) < processes:
                worker = _start_worker(waiting.pop(0), action, config, threads)
                running.append(worker)
                selector.register(worker.proc.stdout, selectors.EVENT_READ, worker)
            for key, _ in selector.select(timeout=0.5):
                worker = key.data
                chunk = worker.proc.stdout.read()
                if chunk:
                    worker.buffer += chunk
                    *lines, worker.buffer = worker.buffer.split(b"\n")
                    for line in lines:
                        record(NodeResult(**json.loads(line)))
                    continue
                # end of output: the worker is done (or died)
                code = worker.proc.wait(5)
                stderr = worker.proc.stderr.read().decode(errors="replace").strip()
                last = stderr.splitlines()[-1] if stderr else ""
                finish(
                    worker,
                    f"worker process exited with code {code} without a result {last}".strip(),
                )
            now = time.monotonic()
            for worker in list(running):
                if now - worker.started > worker.bound:
                    finish(worker, "timeout")
    finally:
        for worker in running:
            worker.stop()
        selector.close()
    return [got[name] for name in names]
