"""The lab network: a private network namespace holding a bridge without uplink and one tap
per VM, built with pyroute2 and removed as a whole.

Why a namespace: several labs and tests run at once on one machine, all with the site network
10.213.0.0/24; in the host namespace their bridges' routes would clash. In its own namespace a
lab's bridge has no route to anything but its taps: nothing is forwarded or NATed out. The lab
server and QEMU run inside it (`ip netns exec NAME ...`, or `LabNetwork.enter()`).

Every name carries the creating process's PID (`plab-<pid>[-tag]`, taps `pt<pid>n<i>`), so
parallel runs never collide and `sweep()` can remove what a killed run left behind (its PID no
longer alive). Removing the namespace removes the bridge and every tap in it.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from pyroute2 import IPRoute, NetNS, netns

from provisiond.errors import UserError

PREFIX = "plab-"
BRIDGE = "labbr0"
_NAME = re.compile(rf"^{PREFIX}(\d+)(?:-[a-z0-9]+)?$")


def namespace_name(pid: int | None = None, tag: str = "") -> str:
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{pid}" + (f"-{tag}" if tag else "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LabNetwork:
    """One namespace + bridge (with `address` on it) + taps. Use as a context manager, or call
    create() and remove() (remove() is idempotent and safe after a partial create())."""

    address: IPv4Interface = field(default_factory=lambda: IPv4Interface("10.213.0.1/24"))
    tag: str = ""
    name: str = ""
    taps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = namespace_name(tag=self.tag)

    @property
    def bridge(self) -> str:
        return BRIDGE

    def create(self) -> LabNetwork:
        if os.geteuid() != 0:
            raise UserError("the lab network needs root (network namespaces, bridges, taps)")
        if self.name in netns.listnetns():
            raise UserError(f"network namespace {self.name} already exists; remove it with "
                            f"`ip netns del {self.name}` or `provisiond lab down`")
        netns.create(self.name)
        try:
            with NetNS(self.name) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                ns.link("add", ifname=BRIDGE, kind="bridge", br_forward_delay=0)
                bridge = ns.link_lookup(ifname=BRIDGE)[0]
                ns.addr("add", index=bridge, address=str(self.address.ip),
                        prefixlen=self.address.network.prefixlen)
                ns.link("set", index=bridge, state="up")
        except BaseException:
            self.remove()
            raise
        return self

    def add_tap(self) -> str:
        """A new tap (persistent, so QEMU can open it by name) on the bridge; its name."""
        pid = os.getpid()
        name = f"pt{pid}n{len(self.taps)}"[:15]
        # Created in our namespace (QEMU-style flags), then moved: pyroute2 makes taps by ioctl.
        with IPRoute() as host:
            host.link("add", ifname=name, kind="tuntap", mode="tap", no_pi=True, vnet_hdr=True)
            self.taps.append(name)
            host.link("set", index=host.link_lookup(ifname=name)[0], net_ns_fd=self.name)
        with NetNS(self.name) as ns:
            bridge = ns.link_lookup(ifname=BRIDGE)[0]
            ns.link("set", index=ns.link_lookup(ifname=name)[0], master=bridge, state="up")
        return name

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the lab network."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.exec_prefix(), *command], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def remove(self) -> None:
        """Delete the namespace (bridge and taps go with it) and any tap still in ours."""
        with IPRoute() as host:
            for tap in self.taps:
                for index in host.link_lookup(ifname=tap):
                    host.link("del", index=index)
        try:
            netns.remove(self.name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        except FileNotFoundError:
            pass

    def exists(self) -> bool:
        return self.name in netns.listnetns()

    def __enter__(self) -> LabNetwork:
        return self.create()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def lab_namespaces() -> list[tuple[str, int]]:
    """(name, owner PID) of every lab namespace on this machine."""
    found = []
    for name in netns.listnetns():
        match = _NAME.match(name)
        if match:
            found.append((name, int(match.group(1))))
    return found


def sweep() -> list[str]:
    """Remove lab namespaces (and host-side lab taps) whose owner process is gone (a run killed
    by SIGKILL); labs of live processes, parallel runs included, are theirs to remove.
    Returns what was removed."""
    removed = []
    for name, pid in lab_namespaces():
        if not _pid_alive(pid):
            LabNetwork(name=name).remove()
            removed.append(name)
    with IPRoute() as host:
        for link in host.get_links():
            ifname = link.get("ifname") or ""
            match = re.match(r"^pt(\d+)n\d+$", ifname)
            if match and not _pid_alive(int(match.group(1))):
                host.link("del", index=link["index"])
                removed.append(ifname)
    return removed
