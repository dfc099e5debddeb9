"""Network namespace labs for the DHCP tests: a server namespace and a client namespace joined
by one veth pair, created by the test and deleted afterwards (also on failure). No uplink: the
only traffic is between the two ends."""

from __future__ import annotations

import random
import socket
import stat
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

from conftest import require_program, stop_process  # tests/conftest.py
from netlab import VethPair, in_netns, run, veth_pair

from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREQUEST, FLAG_BROADCAST, DhcpPacket, build, parse

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
PXE_VENDOR = b"PXEClient:Arch:00000:UNDI:002001"  # a BIOS PXE ROM's vendor class


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
            stop_process(proc, grace=5)
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
        stop_process(proc, grace=5)
    return _read_env(out) if out.exists() else None


def start_dnsmasq(lab: Lab, tmp: Path) -> subprocess.Popen[bytes]:
    """A real dnsmasq handing out 10.213.1.100-150 on the server side (log: tmp/dnsmasq.log);
    stop it with conftest.stop_process."""
    with (tmp / "dnsmasq.log").open("wb") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.server_ns, require_program("dnsmasq"), "--keep-in-foreground",
             "--conf-file=/dev/null", "--port=0", "--user=root", "--group=root",
             f"--interface={lab.server_if}", "--bind-interfaces", "--no-ping", "--log-dhcp",
             "--log-facility=-", "--dhcp-range=10.213.1.100,10.213.1.150,255.255.255.0,1h",
             f"--dhcp-leasefile={tmp / 'dnsmasq.leases'}", f"--pid-file={tmp / 'dnsmasq.pid'}"],
            stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise AssertionError(f"dnsmasq exited: {(tmp / 'dnsmasq.log').read_text()}")
    return proc


def pxe_discover(mac: str, extra: dict[Opt, bytes] | None = None) -> DhcpPacket:
    """A BIOS PXE ROM's broadcast DISCOVER from `mac` (a new random xid), plus `extra` options."""
    return DhcpPacket(
        op=BOOTREQUEST, xid=random.getrandbits(32), chaddr=bytes.fromhex(mac.replace(":", "")),
        flags=FLAG_BROADCAST,
        options={Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]), Opt.VENDOR_CLASS: PXE_VENDOR,
                 Opt.CLIENT_ARCH: b"\x00\x00", Opt.CLIENT_NDI: b"\x01\x02\x01", **(extra or {})})


def offers_to(lab: Lab, discover: DhcpPacket, want: int = 2, seconds: float = 4) -> list[DhcpPacket]:
    """Broadcast `discover` from the client side; the replies to its xid, until `want` of them
    came or `seconds` passed."""
    offers = []
    with udp_socket(lab.client_ns, lab.client_if, "0.0.0.0", 68) as sock:
        sock.sendto(build(discover), ("255.255.255.255", 67))
        sock.settimeout(0.5)
        deadline = time.monotonic() + seconds
        while len(offers) < want and time.monotonic() < deadline:
            try:
                reply = parse(sock.recvfrom(4096)[0])
            except TimeoutError:
                continue
            if reply.xid == discover.xid:
                offers.append(reply)
    return offers
