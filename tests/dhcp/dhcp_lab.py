"""Network namespace labs for the DHCP tests: a server namespace and a client namespace joined
by one veth pair, created by the test and deleted afterwards (also on failure). No uplink: the
only traffic is between the two ends."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

from conftest import require_program  # tests/conftest.py
from netlab import VethPair, in_netns, run, veth_pair

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


Lab = VethPair


def veth_lab(tag: str, server_addresses: tuple[str, ...]) -> AbstractContextManager[Lab]:
    """Two namespaces and a veth pair between them; everything removed on exit."""
    return veth_pair("pdhcp", tag, server_addresses)


def udp_socket(ns: str, interface: str, address: str, port: int) -> socket.socket:
    """A UDP socket living in namespace `ns`, bound to `interface`."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        sock.bind((address, port))
    return sock


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "exit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def dhclient(lab: Lab, workdir: Path, config: str = "", timeout: float = 20) -> dict[str, str] | None:
    """Run ISC dhclient in the client namespace until it is bound; return its script's env.

    Its script only writes the environment to a file: nothing is configured, and the host's
    resolv.conf is never touched.
    """
    binary = require_program("dhclient")
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "bound.env"
    script = _script(workdir / "script", (
        f'case "$reason" in BOUND|REBOOT|RENEW) env > "{out}.tmp" && mv "{out}.tmp" "{out}";; esac\n'
    ))
    conf = workdir / "dhclient.conf"
    conf.write_text(
        "request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,"
        " host-name;\n" + config
    )
    with (workdir / "dhclient.log").open("wb") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.client_ns, binary, "-d", "-1", "-v", "-cf", str(conf),
             "-lf", str(workdir / "leases"), "-pf", str(workdir / "pid"), "-sf", str(script),
             lab.client_if],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not out.exists() and proc.poll() is None:
                time.sleep(0.1)
        finally:
            _stop(proc)
    return _read_env(out) if out.exists() else None


def udhcpc(
    lab: Lab, workdir: Path, *options: str, tries: int = 3, release: bool = False,
) -> dict[str, str] | None:
    """Run busybox udhcpc once in the client namespace; the env of its `bound` event, or None.

    With `release`, the script also puts the address on the client's interface (inside its
    namespace) and udhcpc is stopped with SIGTERM after binding, so that it sends a unicast
    DHCPRELEASE from that address (-R) as it exits.
    """
    busybox = require_program("busybox")
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "bound.env"
    setup = '&& ip addr add "$ip/$subnet" dev "$interface"' if release else ""
    script = _script(workdir / "script", f'[ "$1" = bound ] && env > "{out}" {setup}\n')
    command = ["ip", "netns", "exec", lab.client_ns, busybox, "udhcpc", "-i", lab.client_if,
               "-f", "-n", "-t", str(tries), "-T", "1", "-A", "1", "-s", str(script), *options]
    if not release:
        run(*command, "-q", check=False, timeout=tries * 3 + 10)
        return _read_env(out) if out.exists() else None
    proc = subprocess.Popen([*command, "-R"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + tries * 3 + 10
        while time.monotonic() < deadline and not out.exists() and proc.poll() is None:
            time.sleep(0.1)
    finally:
        _stop(proc)
    return _read_env(out) if out.exists() else None
