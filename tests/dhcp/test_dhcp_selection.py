"""Network selection of a DHCP request: RFC 3011, RFC 3527, giaddr, ciaddr, interface."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREQUEST, DhcpPacket, MalformedPacket, build, parse
from provisiond.dhcp.selection import link_selection, select_network

SITE = IPv4Network("10.213.0.0/24")
RACK2 = IPv4Network("10.214.0.0/24")
RACK3 = IPv4Network("10.215.0.0/24")
NETWORKS = (SITE, RACK2, RACK3)


def request(giaddr: str = "0.0.0.0", ciaddr: str = "0.0.0.0", **options: bytes) -> DhcpPacket:
    opts = {Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER])}
    opts.update({int(k.removeprefix("o")): v for k, v in options.items()})
    packet = DhcpPacket(op=BOOTREQUEST, xid=7, chaddr=bytes.fromhex("525400000001"), options=opts,
                        giaddr=IPv4Address(giaddr), ciaddr=IPv4Address(ciaddr))
    return parse(build(packet))  # what the server sees is what came over the wire


def agent(*subs: tuple[int, bytes]) -> bytes:
    return b"".join(bytes([code, len(value)]) + value for code, value in subs)


def chosen(req: DhcpPacket, arrival: IPv4Network | None = SITE) -> tuple[IPv4Network | None, str]:
    selection = select_network(req, NETWORKS, arrival)
    return selection.network, selection.by


def test_direct_request_takes_the_arrival_interfaces_network() -> None:
    assert chosen(request()) == (SITE, "interface")
    assert chosen(request(), arrival=RACK3) == (RACK3, "interface")


def test_relayed_request_takes_the_relays_network() -> None:
    assert chosen(request(giaddr="10.214.0.1")) == (RACK2, "relay")


def test_relay_on_no_network_selects_nothing() -> None:
    selection = select_network(request(giaddr="192.0.2.1"), NETWORKS, SITE)
    assert selection.network is None
    assert selection.reason == "relay address 192.0.2.1 is on no network of the inventory"


def test_renewal_sent_straight_to_the_server_takes_the_clients_network() -> None:
    """A relayed client renews by unicast to the server, without the relay (RFC 2131 4.4.5)."""
    assert chosen(request(ciaddr="10.215.0.11")) == (RACK3, "client")
    # An address on none of ours: the interface decides (and the policy NAKs a wrong lease).
    assert chosen(request(ciaddr="192.0.2.9")) == (SITE, "interface")


def test_link_selection_sub_option_overrides_giaddr() -> None:
    """RFC 3527: the relay's giaddr is its own address on the server side; sub-option 5 names
    the client's link."""
    o82 = agent((1, b"eth7"), (5, IPv4Address("10.215.0.1").packed))
    req = request(giaddr="10.213.0.254", o82=o82)
    assert link_selection(req) == IPv4Address("10.215.0.1")
    assert chosen(req) == (RACK3, "link-selection")


def test_malformed_link_selection_is_not_used() -> None:
    for o82 in (agent((5, b"\x0a\xd7\x00")), agent((1, b"eth7")) + b"\x05\x04\x0a"):
        req = request(giaddr="10.214.0.1", o82=o82)
        assert link_selection(req) is None
        assert chosen(req) == (RACK2, "relay")


def test_subnet_selection_option_overrides_everything() -> None:
    """RFC 3011: the client (or a relay on its behalf) names the subnet it wants."""
    o82 = agent((5, IPv4Address("10.215.0.1").packed))
    req = request(giaddr="10.214.0.1", o82=o82, o118=IPv4Address("10.213.0.77").packed)
    assert chosen(req, arrival=RACK2) == (SITE, "subnet-selection")
    assert chosen(request(o118=IPv4Address("198.51.100.1").packed))[0] is None


def test_subnet_selection_option_of_wrong_length_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match=r"option 118 \(subnet selection\) has length 3"):
        request(o118=b"\x0a\xd5\x00")
