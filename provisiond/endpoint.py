"""Where this server answers on the site network: interface, address, HTTP base URL.

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

from pyroute2 import IPRoute

from provisiond.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """One interface on the site network, our address on it, and the HTTP port."""

    interface: str
    address: IPv4Address
    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"


def resolve_endpoint(spec: str, site: Any, http_port: int) -> Endpoint:
    """The Endpoint for `--interface NAME|ADDRESS` on the inventory's site network."""
    try:
        given: IPv4Address | None = IPv4Address(spec)
    except ValueError:
        given = None
    if given is not None and given not in site.network:
        raise UserError(
            f"address {given} is not on the site network {site.network}: give an address "
            "(or interface) on that network with --interface"
        )
    name, addresses = find_interface(spec)
    address = choose_server_address(name, addresses, site.network, given or site.server)
    return Endpoint(name, address, http_port)


def find_interface(spec: str) -> tuple[str, list[IPv4Interface]]:
    """The interface named `spec`, or holding address `spec`, with its IPv4 addresses (pyroute2).

    Raises UserError when there is no such interface or address.
    """
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
    """Our address on the site network: the inventory's `site.server` if the interface has it.

    Refuses an interface with no address on the site network, so provisiond never answers on
    a network the inventory does not describe.
    """
    on_site = [a.ip for a in addresses if a.ip in network]
    if not on_site:
        found = ", ".join(str(a) for a in addresses) or "no IPv4 address"
        raise UserError(
            f"interface {interface} is not on the site network {network} (it has {found}); "
            "give the interface that is on that network, or fix site.network in the inventory"
        )
    if preferred in on_site:
        return preferred
    log.warning(
        "site.server %s is not an address of %s; answering as %s", preferred, interface, on_site[0]
    )
    return on_site[0]


