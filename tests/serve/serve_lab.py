"""A running `provisiond serve` inside a network namespace, for the end-to-end tests.

Two namespaces (server, client) joined by a veth pair, created here and deleted afterwards,
also on failure: no uplink, no traffic outside. The server runs the real CLI
(`provisiond ... serve`) as a child process; clients are real programs (curl, udhcpc) run in
the client namespace, whose veth carries the nodes' addresses so requests come from them.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import require_program  # tests/conftest.py
from netlab import VethPair, run, veth_pair

REPO = Path(__file__).resolve().parents[2]
PROVISIOND = [sys.executable, "-m", "provisiond"]


Netns = VethPair


def netns_pair(tag: str, server_cidr: str, client_cidrs: list[str]) -> AbstractContextManager[Netns]:
    return veth_pair("psrv", tag, [server_cidr], client_cidrs)


@dataclass
class Served:
    """One `provisiond serve` process (and the files it uses)."""

    ns: Netns
    workdir: Path
    inventory: Path
    state_dir: Path
    config: Path
    tftp_root: Path
    server_ip: str
    http_port: int = 8080
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://{self.server_ip}:{self.http_port}"

    def globals(self) -> list[str]:
        return ["--inventory", str(self.inventory), "--state-dir", str(self.state_dir),
                "--config", str(self.config)]

    def start(self, timeout: float = 40) -> None:
        self.log_path = self.workdir / f"serve-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns.server_ns, *PROVISIOND, *self.globals(), "serve",
                 "--interface", self.ns.server_if, "--tftp-root", str(self.tftp_root)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.log()}"
            if b"event=serving" in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"serve did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[int]:
        """PIDs of processes started by serve (the HTTP child), found by parent PID."""
        assert self.process is not None
        out = run("ps", "-o", "pid=", "--ppid", str(self.process.pid), check=False).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Signal serve and wait for its exit: serve bounds its own stop (HTTP graceful_timeout, then
        each service joined); this wait only bounds the test, generously for a loaded machine."""
        assert self.process is not None
        os.kill(self.process.pid, sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:  # the wait ran out: leave nothing running
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run(*PROVISIOND, *self.globals(), *args, check=check, cwd=self.workdir)

    def curl(self, source: str, path: str, *args: str) -> tuple[int, str]:
        """A real HTTP request from `source` (a node's address) in the client namespace."""
        code, body = self.curl_bytes(source, path, *args)
        return code, body.decode(errors="replace")

    def curl_bytes(self, source: str, path: str, *args: str) -> tuple[int, bytes]:
        out = self.workdir / f"curl-{time.monotonic_ns()}"
        result = self.ns.client_run(
            require_program("curl"), "-sS", "--max-time", "10", "--interface", source,
            "-o", str(out), "-w", "%{http_code}", *args, self.url + path)
        return int(result.stdout.strip()), out.read_bytes() if out.exists() else b""

    def post_event(self, source: str, host: str, event: str, token: str | None) -> int:
        headers = ["-H", "Content-Type: application/json"]
        if token is not None:
            headers += ["-H", f"Authorization: Bearer {token}"]
        code, _ = self.curl(source, f"/api/v1/nodes/{host}/events", "-X", "POST", *headers,
                            "--data", json.dumps({"event": event}))
        return code

    def tftp_get(self, name: str) -> bytes:
        """A file over TFTP with curl's TFTP client, from the client namespace."""
        out = self.workdir / f"tftp-{time.monotonic_ns()}"
        self.ns.client_run(require_program("curl"), "-sS", "--max-time", "10", "-o", str(out),
                           f"tftp://{self.server_ip}/{name}")
        return out.read_bytes()

    def tftp_get_from(self, source: str, name: str) -> bytes:
        """Like tftp_get, from `source` (one of the client's addresses); b"" when it failed."""
        out = self.workdir / f"tftp-{time.monotonic_ns()}"
        self.ns.client_run(require_program("curl"), "-sS", "--max-time", "10", "--interface",
                           source, "-o", str(out), f"tftp://{self.server_ip}/{name}", check=False)
        return out.read_bytes() if out.exists() else b""

    def udhcpc(self, mac: str, *options: str) -> dict[str, str] | None:
        """busybox udhcpc as the node (its MAC) once; the env of its `bound` event."""
        busybox = require_program("busybox")
        run("ip", "-n", self.ns.client_ns, "link", "set", "dev", self.ns.client_if, "address", mac)
        # The server's ARP cache still maps the client's addresses to the old MAC.
        run("ip", "-n", self.ns.server_ns, "neigh", "flush", "dev", self.ns.server_if)
        out = self.workdir / f"udhcpc-{time.monotonic_ns()}.env"
        script = self.workdir / "udhcpc.sh"
        script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > "{out}"\nexit 0\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.ns.client_run(busybox, "udhcpc", "-i", self.ns.client_if, "-f", "-q", "-n", "-t", "3",
                           "-T", "1", "-A", "1", "-s", str(script), *options, check=False, timeout=30)
        if not out.exists():
            return None
        return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
