"""A routed site for the relay tests: a server segment and a client segment joined by a router
namespace that runs a real DHCP relay agent (ISC dhcrelay or dnsmasq --dhcp-relay).

    server ns  [srv 10.213.0.1/24] --veth-- [up 10.213.0.254/24]  router ns  [br0 10.214.0.1/24]
                                                                                 |        |
                                                  client ns [cli (no address)] --+     tap0.. (VMs)

The router forwards between its two subnets (ip_forward) and relays DHCP; nothing else: no
proxy ARP, no host routes. The server namespace has one route to the client subnet via the
router, as a real site's server gets from its network configuration. Everything is created by
the test and removed afterwards, also on failure; no uplink; names carry the PID; the relay is
stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import require_program, require_root
from netlab import VethPair, run

SERVER, ROUTER_UP, ROUTER_DOWN = "10.213.0.1", "10.213.0.254", "10.214.0.1"
SERVER_NET, CLIENT_NET = "10.213.0.0/24", "10.214.0.0/24"
RELAYS = ("dhcrelay", "dnsmasq")


@dataclass
class RelayLab:
    server_ns: str
    router_ns: str
    client_ns: str
    server_if: str  # in server_ns
    uplink_if: str  # the router's leg on the server segment
    client_if: str  # in client_ns, a port of the router's br0
    workdir: Path
    relay: subprocess.Popen[bytes] | None = None
    relay_kind: str = ""
    _logs: list[Path] = field(default_factory=list)

    @property
    def client(self) -> VethPair:
        """The client side as the DHCP client helpers (tests/dhcp/dhcp_lab.py) take it."""
        return VethPair(self.server_ns, self.client_ns, self.server_if, self.client_if)

    def relay_log(self) -> str:
        path = self.workdir / f"relay-{self.relay_kind}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_relay(self, kind: str) -> None:
        """Start a real relay agent in the router: its client side br0, its server SERVER."""
        self.stop_relay()
        if kind == "dhcrelay":
            command = [require_program("dhcrelay"), "-4", "-d", "--no-pid",
                       "-iu", self.uplink_if, "-id", "br0", SERVER]
        elif kind == "dnsmasq":
            command = [require_program("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null",
                       "--port=0", "--user=root", "--group=root", "--log-dhcp", "--log-facility=-",
                       f"--pid-file={self.workdir / 'relay-dnsmasq.pid'}",
                       f"--dhcp-relay={ROUTER_DOWN},{SERVER}", "--interface=br0",
                       f"--interface={self.uplink_if}", "--bind-interfaces"]
        else:
            raise ValueError(kind)
        self.relay_kind = kind
        log = (self.workdir / f"relay-{kind}.log").open("wb")
        self.relay = subprocess.Popen(["ip", "netns", "exec", self.router_ns, *command],
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        time.sleep(1.0)  # the relay opens its sockets; a dead one is reported at once
        assert self.relay.poll() is None, f"{kind} exited: {self.relay_log()}"

    def stop_relay(self) -> None:
        if self.relay is None:
            return
        if self.relay.poll() is None:
            os.kill(self.relay.pid, signal.SIGTERM)
            try:
                self.relay.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.relay.pid, signal.SIGKILL)
                self.relay.wait(5)
        self.relay = None

    def set_client_mac(self, mac: str) -> None:
        run("ip", "-n", self.client_ns, "link", "set", "dev", self.client_if, "address", mac)

    def routes(self, ns: str) -> list[str]:
        return run("ip", "-n", ns, "-4", "route", "show").stdout.splitlines()


@contextmanager
def relay_lab(workdir: Path, tag: str = "") -> Iterator[RelayLab]:
    require_root()
    require_program("ip")
    suffix = f"{os.getpid() % 100000}{tag}"
    lab = RelayLab(f"prl-s{suffix}", f"prl-r{suffix}", f"prl-c{suffix}", f"rls{suffix}"[:15],
                   f"rlu{suffix}"[:15], f"rlc{suffix}"[:15], workdir)
    port = f"rlp{suffix}"[:15]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for ns in (lab.server_ns, lab.router_ns, lab.client_ns):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "link", "add", lab.server_if, "netns", lab.server_ns, "type", "veth",
            "peer", "name", lab.uplink_if, "netns", lab.router_ns)
        run("ip", "link", "add", lab.client_if, "netns", lab.client_ns, "type", "veth",
            "peer", "name", port, "netns", lab.router_ns)
        for ns, command in (
            (lab.server_ns, ["addr", "add", f"{SERVER}/24", "dev", lab.server_if]),
            (lab.server_ns, ["link", "set", lab.server_if, "up"]),
            # The site's network configuration: the client subnet is behind the router.
            (lab.server_ns, ["route", "add", CLIENT_NET, "via", ROUTER_UP]),
            (lab.router_ns, ["addr", "add", f"{ROUTER_UP}/24", "dev", lab.uplink_if]),
            (lab.router_ns, ["link", "set", lab.uplink_if, "up"]),
            (lab.router_ns, ["link", "add", "br0", "type", "bridge"]),
            (lab.router_ns, ["addr", "add", f"{ROUTER_DOWN}/24", "dev", "br0"]),
            (lab.router_ns, ["link", "set", "br0", "up"]),
            (lab.router_ns, ["link", "set", port, "master", "br0"]),
            (lab.router_ns, ["link", "set", port, "up"]),
            (lab.client_ns, ["link", "set", lab.client_if, "up"]),
        ):
            run("ip", "-n", ns, *command)
        run("ip", "netns", "exec", lab.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield lab
    finally:
        lab.stop_relay()
        for ns in (lab.server_ns, lab.router_ns, lab.client_ns):
            run("ip", "netns", "del", ns, check=False)
