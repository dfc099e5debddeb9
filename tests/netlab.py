"""Two network namespaces joined by one veth pair, for tests that cross a network.

Created by the test and deleted afterwards, also on failure. No uplink: the only traffic is
between the two ends. Used by the DHCP and serve tests (and the lab's tests later).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from conftest import require_program, require_root
from pyroute2.netns import popns, pushns


def run(*args: str, check: bool = True, timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block inside namespace `name` (this thread only: sockets it creates live there)."""
    pushns(name)
    try:
        yield
    finally:
        popns()



def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process the test started: `sig`, then SIGKILL after 20 s (bounded either way)."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class VethPair:
    server_ns: str
    client_ns: str
    server_if: str
    client_if: str

    def client_run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.client_ns, *args, check=check, timeout=timeout)

    def set_client_mac(self, mac: str) -> None:
        run("ip", "-n", self.client_ns, "link", "set", "dev", self.client_if, "address", mac)

    def client_address(self, cidr: str, add: bool = True) -> None:
        run("ip", "-n", self.client_ns, "addr", "add" if add else "del", cidr, "dev", self.client_if)


@contextmanager
def veth_pair(prefix: str, tag: str, server_addresses: Sequence[str],
              client_addresses: Sequence[str] = ()) -> Iterator[VethPair]:
    """Namespaces `<prefix>-s…`/`<prefix>-c…` and a veth pair between them, removed on exit."""
    require_root()
    require_program("ip")
    suffix = f"{os.getpid() % 100000}{tag}"
    short = prefix[:3]
    pair = VethPair(f"{prefix}-s{suffix}", f"{prefix}-c{suffix}", f"{short}s{suffix}"[:15], f"{short}c{suffix}"[:15])
    try:
        run("ip", "netns", "add", pair.server_ns)
        run("ip", "netns", "add", pair.client_ns)
        run("ip", "link", "add", pair.server_if, "netns", pair.server_ns, "type", "veth",
            "peer", "name", pair.client_if, "netns", pair.client_ns)
        for address in server_addresses:
            run("ip", "-n", pair.server_ns, "addr", "add", address, "dev", pair.server_if)
        for address in client_addresses:
            run("ip", "-n", pair.client_ns, "addr", "add", address, "dev", pair.client_if)
        for ns, dev in ((pair.server_ns, pair.server_if), (pair.client_ns, pair.client_if)):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.server_ns, pair.client_ns):
            run("ip", "netns", "del", ns, check=False)
