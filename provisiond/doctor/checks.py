"""Doctor's check results and the rules that make them from gathered facts (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Result:
    """One check's verdict; `subject` names what it is about (a node, a port, an interface)."""

    check: str
    status: Status
    message: str
    fix: str = ""
    subject: str = ""

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]

    @property
    def status(self) -> Status:
        statuses = {result.status for result in self.results}
        return Status.FAIL if Status.FAIL in statuses else Status.WARN if Status.WARN in statuses else Status.OK

    @property
    def exit_code(self) -> int:
        return 1 if self.status is Status.FAIL else 0

    def json(self) -> dict[str, Any]:
        counts = {str(status): sum(1 for r in self.results if r.status is status) for status in Status}
        return {"status": str(self.status), "counts": counts, "results": [r.json() for r in self.results]}


# -- interface --------------------------------------------------------------------------------

def interface_result(name: str, exists: bool, up: bool, addresses: Iterable[IPv4Interface],
                     networks: Sequence[tuple[IPv4Network, IPv4Address]]) -> Result:
    """The serving interface exists, is up, and has an address on a network of the site
    (`networks`: each network with provisiond's address on it, the site network first)."""
    check = "interface"
    if not exists:
        return Result(check, Status.FAIL, f"interface {name} does not exist",
                      "pass the provisioning interface with --interface (serve.interfaces in provisiond.toml)", name)
    site_network, site_server = networks[0]
    homes = {address: next((pair for pair in networks if address.ip in pair[0]), None) for address in addresses}
    on_site = {address: home for address, home in homes.items() if home is not None}
    if not on_site:
        where = (f"the site network {site_network}" if len(networks) == 1 else
                 "any network of the site (" + ", ".join(str(network) for network, _ in networks) + ")")
        return Result(check, Status.FAIL, f"{name} has no address on {where}",
                      f"add one, e.g. `ip addr add {site_server}/{site_network.prefixlen} dev {name}`", name)
    if not up:
        return Result(check, Status.FAIL, f"{name} is down", f"`ip link set {name} up`", name)
    serving = next(((address, home) for address, home in on_site.items() if address.ip == home[1]), None)
    if serving is None:
        servers = ", ".join(f"{home[1]} for {home[0]}" for home in dict.fromkeys(on_site.values()))
        return Result(check, Status.WARN, f"{name} has {', '.join(str(a.ip) for a in on_site)}, not the server "
                      f"address of its network ({servers}): DHCP announces the interface's address",
                      "set site.server (or the network's server) to it", name)
    address, (network, _) = serving
    return Result(check, Status.OK, f"{name} is up with {address.ip} in {network}", subject=name)


def relay_results(networks: Iterable[Any], served: Sequence[IPv4Address]) -> list[Result]:
    """Each relayed network (a SiteNetwork with `relayed`) is reached from the addresses serve
    would answer on (`served`: one per --interface): its nodes are told to fetch from its
    `server`, which must be one of them."""
    results = []
    for network in networks:
        if not network.relayed:
            continue
        subject = str(network.network)
        if network.reached_from(served):
            results.append(Result("relay", Status.OK, f"relayed network {network.network} is served at "
                                  f"{network.server}", subject=subject))
        else:
            results.append(Result(
                "relay", Status.FAIL,
                f"relayed network {network.network} is served at {network.server} (its `server`, default "
                f"site.server), but serve answers only on {', '.join(map(str, served)) or 'no address'}",
                "pass the interface with that address (--interface), or set the network's server; the "
                "relay must forward to it (docs/dhcp.md)", subject))
    return results


# -- ports ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PortHolder:
    pid: int | None
    program: str  # the command line, shortened

    @property
    def is_provisiond(self) -> bool:
        return "provisiond" in self.program


def port_result(protocol: str, port: int, what: str, holders: list[PortHolder]) -> Result:
    subject = f"{port}/{protocol}"
    if not holders:
        return Result("port", Status.OK, f"{subject} ({what}) is free", subject=subject)
    others = [h for h in holders if not h.is_provisiond]
    if not others:
        return Result("port", Status.OK, f"{subject} ({what}) is held by provisiond", subject=subject)
    names = ", ".join(f"{h.program} (pid {h.pid})" if h.pid else h.program for h in others)
    return Result("port", Status.FAIL, f"{subject} ({what}) is held by {names}",
                  "stop that service on this host, or serve on another host", subject)


def listening_inodes(proc_net_text: str, port: int, udp: bool) -> set[int]:
    """Socket inodes bound to `port` in /proc/net/{udp,tcp}[6] tables (TCP: listening only)."""
    inodes = set()
    for line in proc_net_text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":"):  # a header line
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        listening = udp or fields[3] == "0A"  # TCP_LISTEN
        if local_port == port and listening:
            inodes.add(int(fields[9]))
    return inodes


# -- rogue DHCP -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Offer:
    server: IPv4Address  # option 54, else the packet's source
    offered: IPv4Address
    source: IPv4Address


def rogue_dhcp_result(interface: str, offers: Iterable[Offer], ours: set[IPv4Address], seconds: float,
                      proxy: bool) -> Result:
    """Every offer not from provisiond on the segment; fine only in proxyDHCP mode."""
    check = "rogue-dhcp"
    others = sorted({offer.server for offer in offers if offer.server not in ours})
    if not others:
        return Result(check, Status.OK, f"no other DHCP server answered on {interface} within {seconds:g} s",
                      subject=interface)
    detail = ", ".join(f"{server} (offered " + ", ".join(
        sorted({str(o.offered) for o in offers if o.server == server})) + ")" for server in others)
    if proxy:
        return Result(check, Status.OK, f"DHCP server(s) on {interface}: {detail}; expected in proxyDHCP mode",
                      subject=interface)
    return Result(check, Status.FAIL, f"another DHCP server answers on {interface}: {detail}",
                  "switch it off for this segment (or exclude the nodes' MACs there), or run provisiond "
                  "with serve.dhcp_proxy = true beside it", interface)


# -- power ------------------------------------------------------------------------------------

def power_results(results: Iterable[Any]) -> list[Result]:
    """One result per node from the power fan-out's `status` (NodeResult)."""
    out = []
    for result in results:
        if result.ok:
            out.append(Result("bmc", Status.OK, f"BMC answers (power {result.power})", subject=result.name))
        elif result.error_kind == "no BMC":
            out.append(Result("bmc", Status.WARN, result.message, subject=result.name))
        else:
            out.append(Result("bmc", Status.FAIL, f"{result.error_kind}: {result.message}",
                              "check the BMC's address, port, user and password in the inventory, and that "
                              "it is powered and cabled", result.name))
    return out
