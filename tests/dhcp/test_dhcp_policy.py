"""The answer policy, rule by rule (RFC 2131 section 4.3, PXE spec, RFC 4578)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from provisiond.boot.decision import BootSpec, Loaders, classify, loader_for
from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREQUEST, FLAG_BROADCAST, DhcpPacket, build, parse
from provisiond.dhcp.policy import (
    BROADCAST,
    Action,
    Assignment,
    Site,
    decide,
    is_ipxe,
)

SERVER = IPv4Address("10.50.0.1")
SITE = Site(
    server=SERVER, network=IPv4Network("10.50.0.0/24"), gateway=IPv4Address("10.50.0.254"),
    dns=(IPv4Address("10.50.0.53"),), domain="lab.example", lease_time=3600,
)
MAC = bytes.fromhex("525400aabb01")
LOADERS = Loaders()


def request(mtype: MessageType, **options: bytes) -> DhcpPacket:
    opts = {Opt.MESSAGE_TYPE: bytes([mtype])}
    opts.update({int(k.removeprefix("o")): v for k, v in options.items()})
    return DhcpPacket(op=BOOTREQUEST, xid=42, chaddr=MAC, options=opts)


def boot_for(options: dict, install: bool = True, req: DhcpPacket | None = None) -> BootSpec:
    """What the boot decision (provisiond.boot) says for a client with these options."""
    req = parse(build(req or request(MessageType.DISCOVER, **options)))
    client = classify(req.client_archs, req.vendor_class, is_ipxe(req))
    loader = loader_for(client, install, req.mac, "http://10.50.0.1:8080", LOADERS)
    return BootSpec("node1", req.mac, install, loader)


def node(options: dict | None = None, install: bool = True) -> Assignment:
    return Assignment(IPv4Address("10.50.0.11"), "node1", boot=boot_for(options or {}, install))


NODE = node({"o93": b"\x00\x07"})


def answer(req: DhcpPacket, who: Assignment | None = NODE, site: Site = SITE, **kw):
    # Round-trip through the wire format so what is checked is what a client would read.
    if who is NODE:  # the node with netboot on, as the boot decision answers this request
        who = Assignment(NODE.ip, "node1", boot=boot_for({}, req=req))
    decision = decide(parse(build(req)), who, site, **kw)
    if decision.reply is not None:
        assert parse(build(decision.reply)) == decision.reply
    return decision


def test_discover_gets_reserved_address_and_site_options() -> None:
    d = answer(request(MessageType.DISCOVER))
    assert d.action is Action.OFFER and d.reply is not None
    r = d.reply
    assert r.message_type is MessageType.OFFER and r.yiaddr == NODE.ip and r.xid == 42
    assert r.options[Opt.SERVER_ID] == SERVER.packed
    assert r.options[Opt.SUBNET_MASK] == IPv4Address("255.255.255.0").packed
    assert r.options[Opt.ROUTER] == IPv4Address("10.50.0.254").packed
    assert r.options[Opt.DNS] == IPv4Address("10.50.0.53").packed
    assert r.options[Opt.HOSTNAME] == b"node1"
    assert r.options[Opt.DOMAIN] == b"lab.example"
    assert r.options[Opt.BROADCAST] == IPv4Address("10.50.0.255").packed
    assert r.options[Opt.LEASE_TIME] == (3600).to_bytes(4, "big")
    assert d.destination == (BROADCAST, 68)
    assert d.lease is None and d.boot_file is None  # a plain OS client gets no boot file


def test_unknown_mac_gets_nothing() -> None:
    assert answer(request(MessageType.DISCOVER), who=None).action is Action.IGNORE


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"o93": b"\x00\x00", "o60": b"PXEClient:Arch:00000:UNDI:002001"}, "undionly.kpxe"),
        ({"o93": b"\x00\x07", "o60": b"PXEClient:Arch:00007:UNDI:003016"}, "ipxe.efi"),
        ({"o93": b"\x00\x09"}, "ipxe.efi"),
        ({"o93": b"\x00\x10", "o60": b"HTTPClient:Arch:00016:UNDI:003001"},
         "http://10.50.0.1:8080/boot/ipxe.efi"),
        ({"o93": b"\x00\x07", "o77": b"iPXE"}, "http://10.50.0.1:8080/boot/52:54:00:aa:bb:01.ipxe"),
        ({"o77": b"\x04iPXE"}, "http://10.50.0.1:8080/boot/52:54:00:aa:bb:01.ipxe"),
        ({"o93": b"\x00\x0b"}, None),  # ARM64 UEFI: no loader here, address only
        ({"o60": b"PXEClient"}, "undionly.kpxe"),  # a PXE client without option 93 is BIOS
    ],
)
def test_boot_file_by_architecture_and_user_class(options: dict, expected: str | None) -> None:
    d = answer(request(MessageType.DISCOVER, **options), who=node(options))
    assert d.action is Action.OFFER and d.reply is not None
    assert d.boot_file == expected
    if expected is None:
        assert Opt.BOOTFILE not in d.reply.options and d.reply.file == b""
    else:
        assert d.reply.file == expected.encode()
        assert d.reply.options[Opt.BOOTFILE] == expected.encode()
        assert d.reply.siaddr == SERVER


def test_pxe_client_gets_vendor_class_and_discovery_control_and_uuid_echo() -> None:
    uuid = b"\x00" + bytes(range(16))
    req = request(MessageType.DISCOVER, o93=b"\x00\x00", o60=b"PXEClient:Arch:00000", o97=uuid)
    d = answer(req)
    assert d.reply is not None
    assert d.reply.options[Opt.VENDOR_CLASS] == b"PXEClient"
    assert d.reply.options[Opt.VENDOR_SPECIFIC] == bytes([6, 1, 8, 255])
    assert d.reply.options[Opt.CLIENT_UUID] == uuid
    http = answer(request(MessageType.DISCOVER, o93=b"\x00\x10", o60=b"HTTPClient"))
    assert http.reply is not None and http.reply.options[Opt.VENDOR_CLASS] == b"HTTPClient"


def test_boot_local_bios_gets_no_boot_file_and_uefi_grub() -> None:
    bios = {"o93": b"\x00\x00", "o60": b"PXEClient:Arch:00000"}
    d = answer(request(MessageType.DISCOVER, **bios), who=node(bios, install=False))
    assert d.action is Action.OFFER and d.boot_file is None
    ipxe_bios = {"o93": b"\x00\x00", "o77": b"iPXE"}
    d = answer(request(MessageType.DISCOVER, **ipxe_bios), who=node(ipxe_bios, install=False))
    assert d.action is Action.OFFER and d.boot_file is None
    # UEFI: GRUB, whose per-node config chainloads the disk, beats 60 s of DHCP retries.
    uefi = {"o93": b"\x00\x07"}
    d = answer(request(MessageType.DISCOVER, **uefi), who=node(uefi, install=False))
    assert d.boot_file == "grubx64.efi"
    ipxe_uefi = {"o93": b"\x00\x07", "o77": b"iPXE"}
    d = answer(request(MessageType.DISCOVER, **ipxe_uefi), who=node(ipxe_uefi, install=False))
    assert d.boot_file == "grubx64.efi"


def test_an_os_dhcp_client_gets_no_boot_file_even_while_installing() -> None:
    d = answer(request(MessageType.DISCOVER), who=NODE)
    assert d.action is Action.OFFER and d.boot_file is None


def test_request_selecting_acks_and_saves_lease() -> None:
    d = answer(request(MessageType.REQUEST, o54=SERVER.packed, o50=NODE.ip.packed, o93=b"\x00\x07"))
    assert d.action is Action.ACK and d.lease == NODE.ip and d.boot_file == "ipxe.efi"
    assert d.reply is not None and d.reply.message_type is MessageType.ACK


def test_request_for_another_server_is_ignored() -> None:
    other = IPv4Address("10.50.0.2").packed
    d = answer(request(MessageType.REQUEST, o54=other, o50=NODE.ip.packed))
    assert d.action is Action.IGNORE


@pytest.mark.parametrize(
    "options",
    [
        {"o54": SERVER.packed, "o50": IPv4Address("10.50.0.99").packed},
        {"o50": IPv4Address("10.50.0.99").packed},  # INIT-REBOOT with a stale address
    ],
)
def test_request_for_wrong_address_is_nakked(options: dict) -> None:
    d = answer(request(MessageType.REQUEST, **options))
    assert d.action is Action.NAK and d.reply is not None
    assert d.reply.message_type is MessageType.NAK and d.reply.yiaddr == IPv4Address(0)
    assert d.destination == (BROADCAST, 68) and d.lease is None


def test_renewing_is_unicast_to_ciaddr() -> None:
    req = request(MessageType.REQUEST)
    req.ciaddr = NODE.ip
    d = answer(req)
    assert d.action is Action.ACK and d.destination == (NODE.ip, 68)
    assert d.reply is not None and d.reply.ciaddr == NODE.ip
    req.ciaddr = IPv4Address("10.50.0.12")
    assert answer(req).action is Action.NAK


def test_relayed_request_is_answered_to_the_relay_with_option_82() -> None:
    req = request(MessageType.DISCOVER, o82=b"\x01\x04eth7")
    req.giaddr, req.hops = IPv4Address("10.50.0.200"), 1
    d = answer(req)
    assert d.destination == (IPv4Address("10.50.0.200"), 67)
    assert d.reply is not None and d.reply.giaddr == req.giaddr and d.reply.hops == 1
    assert list(d.reply.options)[-1] == Opt.RELAY_AGENT
    nak = request(MessageType.REQUEST, o50=IPv4Address("10.50.0.99").packed)
    nak.giaddr = req.giaddr
    n = answer(nak)
    assert n.destination == (req.giaddr, 67) and n.reply is not None
    assert n.reply.flags & FLAG_BROADCAST


def test_node_on_another_network_than_the_request_is_ignored() -> None:
    """The request came through rack 2's relay, but the inventory puts the node on rack 1:
    it is not answered (no address of the wrong subnet is handed out)."""
    rack2 = Site(server=SERVER, network=IPv4Network("10.60.0.0/24"), gateway=IPv4Address("10.60.0.1"))
    req = request(MessageType.DISCOVER)
    req.giaddr = IPv4Address("10.60.0.1")
    decision = answer(req, site=rack2)
    assert decision.action is Action.IGNORE and "10.50.0.11 is not on 10.60.0.0/24" in decision.reason


def test_relay_at_the_network_or_broadcast_address_is_ignored() -> None:
    for address in (SITE.network.broadcast_address, SITE.network.network_address):
        req = request(MessageType.DISCOVER)
        req.giaddr = address
        decision = answer(req)
        assert decision.action is Action.IGNORE and "not a relay" in decision.reason


def test_release_decline_inform() -> None:
    release = request(MessageType.RELEASE, o54=SERVER.packed)
    release.ciaddr = NODE.ip
    assert answer(release).action is Action.RELEASE
    assert answer(request(MessageType.RELEASE, o54=b"\x01\x02\x03\x04")).action is Action.IGNORE
    decline = request(MessageType.DECLINE, o54=SERVER.packed, o50=NODE.ip.packed)
    assert answer(decline).action is Action.DECLINE
    inform = request(MessageType.INFORM)
    inform.ciaddr = NODE.ip
    d = answer(inform)
    assert d.action is Action.INFORM and d.destination == (NODE.ip, 68)
    assert d.reply is not None and Opt.LEASE_TIME not in d.reply.options and d.lease is None


PROXY = Site(server=SERVER, network=SITE.network, proxy=True)


def test_proxy_offer_has_boot_file_and_no_address() -> None:
    req = request(MessageType.DISCOVER, o93=b"\x00\x00", o60=b"PXEClient:Arch:00000")
    d = answer(req, site=PROXY)
    assert d.action is Action.OFFER and d.reply is not None
    assert d.reply.yiaddr == IPv4Address(0) and d.reply.file == b"undionly.kpxe"
    assert d.reply.options[Opt.VENDOR_CLASS] == b"PXEClient"
    assert Opt.LEASE_TIME not in d.reply.options and Opt.SUBNET_MASK not in d.reply.options


def test_proxy_ignores_plain_clients_and_answers_port_4011_to_the_source() -> None:
    assert answer(request(MessageType.DISCOVER), site=PROXY).action is Action.IGNORE
    req = request(MessageType.REQUEST, o93=b"\x00\x07", o60=b"PXEClient:Arch:00007")
    req.ciaddr = IPv4Address("10.50.0.77")
    source = (IPv4Address("10.50.0.77"), 4011)
    d = answer(req, site=PROXY, port=4011, source=source)
    assert d.action is Action.ACK and d.destination == source and d.reply is not None
    assert d.reply.file == b"ipxe.efi" and d.lease is None
    assert answer(req, site=PROXY, port=67).action is Action.IGNORE


def test_subnet_selection_option_is_echoed() -> None:
    """RFC 3011: a server that honours option 118 returns an identical copy of it."""
    req = request(MessageType.DISCOVER, o118=IPv4Address("10.50.0.0").packed)
    d = answer(req)
    assert d.reply is not None and d.reply.options[Opt.SUBNET_SELECTION] == IPv4Address("10.50.0.0").packed
