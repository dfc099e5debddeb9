"""Where this server answers on a network of the site: interface, address, HTTP base URL.

`serve` resolves each `--interface` once and hands the Endpoint to DHCP (its server id and
boot URLs), TFTP (its bind address) and HTTP (bind address and the base URL written into boot
scripts and answer files), so all three agree on one address.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from provisiond.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """One interface on a network of the inventory, our address on it, and the HTTP port."""

    interface: str
    address: IPv4Address
    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"


def _described(networks: list[IPv4Network]) -> str:
    if len(networks) == 1:
        return f"the site network {networks[0]}"
    return f"any network of the inventory ({', '.join(map(str, networks))})"


def resolve_endpoint(spec: str, site: Any, http_port: int) -> Endpoint:
    """The Endpoint for `--interface NAME|ADDRESS` on one of the inventory's networks."""
    networks = [network.network for network in site.all_networks]
    try:
        given: IPv4Address | None = IPv4Address(spec)
    except ValueError:
        given = None
    if given is not None and not any(given in network for network in networks):
        raise UserError(
            f"address {given} is not on {_described(networks)}: give an address "
            "(or interface) on that network with --interface"
        )
    name, addresses = find_interface(spec)
    on_site = [a for a in addresses if any(a.ip in network for network in networks)]
    if not on_site:
        found = ", ".join(str(a) for a in addresses) or "no IPv4 address"
        raise UserError(
            f"interface {name} is not on {_described(networks)} (it has {found}); "
            "give the interface that is on that network, or fix site.network in the inventory"
        )
    # The interface's network: the one of the address given, else of site.server if the
    # interface has it, else of its first address on an inventory network.
    first = given or next((a.ip for a in on_site if a.ip == site.server), on_site[0].ip)
    home = site.network_of(first)
    address = choose_server_address(name, addresses, home.network, given or home.server)
    return Endpoint(name, address, http_port)


def find_interface(spec: str) -> tuple[str, list[IPv4Interface]]:
    """The interface named `spec`, or holding address `spec`, with its IPv4 addresses (pyroute2).

    Raises UserError when there is no such interface or address.
    """
    from pyroute2 import IPRoute  # netlink: ~0.3 s to import, only on the paths that query links

    with IPRoute() as ipr:
        try:
            wanted = IPv4Address(spec)
        except ValueError:
            index = ipr.link_lookup(ifname=spec)
        else:
            index = [a["index"] for a in ipr.get_addr(family=socket.AF_INET)
                     if a.get("IFA_ADDRESS") == str(wanted)]
        if not index:
            names = sorted(link.get("IFLA_IFNAME") for link in ipr.get_links())
            raise UserError(
                f"no interface {'has address' if '.' in spec else 'is named'} {spec!r} "
                f"(interfaces here: {', '.join(names)}); give the interface on the site "
                "network (or its address) with --interface"
            )
        name = ipr.get_links(index[0])[0].get("IFLA_IFNAME")
        addresses = [
            IPv4Interface(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
            for addr in ipr.get_addr(index=index[0], family=socket.AF_INET)
        ]
    return name, addresses


def choose_server_address(
    interface: str, addresses: list[IPv4Interface], network: IPv4Network, preferred: IPv4Address,
) -> IPv4Address:
    """Our address on `network` (one the interface is on): `preferred` (the network's server
    address) if the interface has it, else its first address there."""
    on_site = [a.ip for a in addresses if a.ip in network]
    if preferred in on_site:
        return preferred
    log.warning(
        "site.server %s is not an address of %s; answering as %s", preferred, interface, on_site[0]
    )
    return on_site[0]


