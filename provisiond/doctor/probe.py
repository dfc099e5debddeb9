"""The rogue-DHCP probe: broadcast a DISCOVER from a probe MAC and collect every OFFER.

The packets are provisiond's own DHCP code (provisiond.dhcp.packet); only `probe` does I/O.
The probe MAC is a locally administered address no real NIC has, so no server reserves
anything for it; nothing is requested, so no lease is taken (an offer is only held briefly).
"""

from __future__ import annotations

import random
import select
import socket
import time
from ipaddress import IPv4Address

from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREPLY, BOOTREQUEST, FLAG_BROADCAST, DhcpPacket, MalformedPacket, build, parse
from provisiond.doctor.checks import Offer

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
CLIENT_PORT, SERVER_PORT = 68, 67


def probe_mac(rng: random.Random) -> bytes:
    """A locally administered unicast MAC (02:...) for the probe."""
    return bytes([0x02, 0x70, 0x64, rng.randrange(256), rng.randrange(256), rng.randrange(256)])


def discover(mac: bytes, xid: int) -> bytes:
    """A DISCOVER asking for a broadcast reply (the probe has no address to be answered on)."""
    return build(DhcpPacket(
        op=BOOTREQUEST, xid=xid, chaddr=mac, flags=FLAG_BROADCAST,
        options={Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
                 Opt.PARAMETER_LIST: bytes([Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS])},
    ))


def offer_from(data: bytes, source: IPv4Address, mac: bytes, xid: int) -> Offer | None:
    """The OFFER in `data` if it answers our DISCOVER (else None: other traffic on port 68)."""
    try:
        packet = parse(data)
    except MalformedPacket:
        return None
    if packet.op != BOOTREPLY or packet.xid != xid or packet.chaddr != mac:
        return None
    if packet.options.get(Opt.MESSAGE_TYPE) != bytes([MessageType.OFFER]):
        return None
    return Offer(server=packet.server_id or source, offered=packet.yiaddr, source=source)


def probe(interface: str, seconds: float, rng: random.Random | None = None) -> list[Offer]:
    """Broadcast a DISCOVER on `interface` (again halfway) and collect offers for `seconds`."""
    rng = rng or random.Random()
    mac, xid = probe_mac(rng), rng.getrandbits(32)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", CLIENT_PORT))
        message = discover(mac, xid)
        offers: dict[tuple[IPv4Address, IPv4Address], Offer] = {}
        start = time.monotonic()
        sent_again = False
        sock.sendto(message, ("255.255.255.255", SERVER_PORT))
        while (left := start + seconds - time.monotonic()) > 0:
            if not sent_again and left < seconds / 2:
                sock.sendto(message, ("255.255.255.255", SERVER_PORT))
                sent_again = True
            ready, _, _ = select.select([sock], [], [], min(left, 0.25))
            if ready:
                data, (host, _port) = sock.recvfrom(4096)
                offer = offer_from(data, IPv4Address(host), mac, xid)
                if offer is not None:
                    offers.setdefault((offer.server, offer.offered), offer)
        return list(offers.values())
    finally:
        sock.close()
