"""Helpers for power tests: virtual BMCs in separate processes on loopback UDP ports.

The BMCs run in their own processes (several BMCs per process, on threads of pyghmi's I/O
loop), never in the test process, whose pyghmi client state must stay separate. Every process
started here is stopped by PID in teardown, also when a test fails.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from provisiond.lab.ports import free_udp_ports

HERE = Path(__file__).resolve().parent
PASSWORD = "s3cret-pw"

_handed_out: set[int] = set()  # every port fresh_udp_ports gave in this process


def fresh_udp_ports(count: int) -> int:
    """First of `count` consecutive loopback UDP ports that are free now and that no earlier
    test of this process was given. This process's BMC claims and pyghmi's sessions are keyed
    by address and port: what an earlier test left behind on a port (a call abandoned at its
    deadline, still waiting in pyghmi on a BMC that is gone) must never meet a new BMC."""
    for _ in range(100):
        base = free_udp_ports(count)
        ports = range(base, base + count)
        if _handed_out.isdisjoint(ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError(f"no {count} consecutive UDP ports free and unused by earlier tests")


class VbmcProcess:
    """A process serving virtual BMCs; its output lines are collected for assertions."""

    def __init__(self, argv: list[str], ready_marker: str) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.wait_for(ready_marker, 30):
            self.stop()
            raise RuntimeError(f"virtual BMC did not start: {self.lines}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        """Wait (bounded) until an output line contains `text`."""
        end = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return any(text in line for line in self.lines)
                self._cond.wait(left)
            return True

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


class Farm:
    """Starts virtual BMC processes for a test and stops all of them afterwards."""

    def __init__(self, password_file: Path) -> None:
        self.password_file = password_file
        self.processes: list[VbmcProcess] = []

    def start(self, count: int = 1, per_process: int = 100) -> list[tuple[int, VbmcProcess]]:
        """`count` BMCs (user admin, PASSWORD), at most `per_process` per process.

        Returns (port, process) for each BMC, in port order.
        """
        result = []
        left = count
        while left:
            n = min(left, per_process)
            base = fresh_udp_ports(n)
            proc = VbmcProcess(
                [sys.executable, "-m", "provisiond.lab.vbmc", "--address", "127.0.0.1",
                 "--port", str(base), "--count", str(n), "--username", "admin",
                 "--password-file", str(self.password_file)],
                "listening on",
            )
            self.processes.append(proc)
            result += [(port, proc) for port in range(base, base + n)]
            left -= n
        return result

    def start_busy(self, busy_calls: int) -> tuple[int, VbmcProcess]:
        """One BMC whose machine answers "node busy" to its first `busy_calls` requests."""
        port = fresh_udp_ports(1)
        proc = VbmcProcess(
            [sys.executable, str(HERE / "busy_vbmc.py"), str(port), str(self.password_file),
             str(busy_calls)],
            "listening on",
        )
        self.processes.append(proc)
        return port, proc

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


@contextmanager
def running_farm(directory: Path) -> Iterator[Farm]:
    """A Farm with a password file in `directory`; every BMC process is stopped on exit."""
    password_file = directory / "bmc.pass"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    farm = Farm(password_file)
    try:
        yield farm
    finally:
        farm.stop()


def dead_port() -> int:
    """A loopback UDP port nobody listens on (the kernel answers ICMP port unreachable)."""
    return fresh_udp_ports(1)


@contextmanager
def black_holes(count: int) -> Iterator[list[int]]:
    """`count` loopback UDP ports that swallow packets and never answer, like a powered-off
    BMC behind a switch (no ICMP error comes back). Closed on exit."""
    base = fresh_udp_ports(count)
    sockets = []
    try:
        for port in range(base, base + count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", port))
        yield list(range(base, base + count))
    finally:
        for sock in sockets:
            sock.close()
