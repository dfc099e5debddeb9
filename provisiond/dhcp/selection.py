"""Which of the site's networks a DHCP request is for: pure, so each rule is a unit test.

The order is the one of ISC dhcpd and Kea:
1. the client's subnet selection option (118, RFC 3011);
2. the relay agent's link selection sub-option (option 82 sub-option 5, RFC 3527), for a
   relay whose giaddr is not on the client's link;
3. the relay's address (giaddr, RFC 2131);
4. for a direct request: the client's own address (ciaddr) when it has one (a renewal sent
   straight to the server from a relayed subnet) if it is on one of the networks, else the
   network of the interface it came in on.
An address that is on none of the networks selects nothing: such a request is not answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from provisiond.dhcp import options as o
from provisiond.dhcp.options import Opt
from provisiond.dhcp.packet import ZERO, DhcpPacket, address


@dataclass(frozen=True)
class Selection:
    """The chosen network (None: none of ours) and why, for the debug log and the tests."""

    network: IPv4Network | None
    by: str  # subnet-selection | link-selection | relay | client | interface
    address: IPv4Address | None = None

    @property
    def reason(self) -> str:
        if self.network is None:
            return f"{self.by} address {self.address} is on no network of the inventory"
        return f"network {self.network} (by {self.by}{f' {self.address}' if self.address else ''})"


def link_selection(request: DhcpPacket) -> IPv4Address | None:
    """RFC 3527's link selection sub-option of the relay agent option, if well formed."""
    agent = request.options.get(Opt.RELAY_AGENT)
    if agent is None:
        return None
    value = o.sub_options(agent).get(o.AGENT_LINK_SELECTION)
    return address(value) if value is not None and len(value) == 4 else None


def select_network(request: DhcpPacket, networks: Sequence[IPv4Network],
                   arrival: IPv4Network | None) -> Selection:
    """The network `request` is for, among `networks`; `arrival`: the receiving interface's."""
    subnet = request.options.get(Opt.SUBNET_SELECTION)  # the parser checked its length
    if subnet is not None:
        by, where = "subnet-selection", address(subnet)
    elif (link := link_selection(request)) is not None:
        by, where = "link-selection", link
    elif request.giaddr != ZERO:
        by, where = "relay", request.giaddr
    elif request.ciaddr != ZERO and any(request.ciaddr in net for net in networks):
        by, where = "client", request.ciaddr
    else:
        return Selection(arrival, "interface")
    network = next((net for net in networks if where in net), None)
    return Selection(network, by, where)
