"""What to answer: a pure function of the request, the client's assignment and the site.

The server looks up who the client is (inventory reservation, dynamic pool, netboot flag) and
applies the side effects (lease saved, state observed); everything in between is here, without
sockets, clocks or the store, so each RFC 2131 rule is a plain unit test.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network

from provisiond.boot.decision import BootSpec
from provisiond.dhcp import options as o
from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREPLY, BOOTREQUEST, FLAG_BROADCAST, ZERO, DhcpPacket

BROADCAST = IPv4Address("255.255.255.255")
SERVER_PORT = 67
CLIENT_PORT = 68
PXE_PORT = 4011


@dataclass(frozen=True)
class Site:
    """The answers common to every client on one network of the site."""

    server: IPv4Address  # our address as this network reaches it: option 54, siaddr, TFTP and HTTP host
    network: IPv4Network
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    ntp: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    lease_time: int = 3600
    proxy: bool = False

    # Encoded once: the same bytes go into every reply (the server answers thousands a second).
    @cached_property
    def server_id(self) -> bytes:
        return o.ip(self.server)

    @cached_property
    def network_options(self) -> dict[int, bytes]:
        opts = {Opt.SUBNET_MASK: o.ip(self.network.netmask)}
        if self.gateway is not None:
            opts[Opt.ROUTER] = o.ip(self.gateway)
        if self.dns:
            opts[Opt.DNS] = o.ips(self.dns)
        return opts

    @cached_property
    def tail_options(self) -> dict[int, bytes]:
        """Options after the hostname (keeps the usual 1, 3, 6, 12, 15, 28 order)."""
        opts = {Opt.DOMAIN: o.text(self.domain)} if self.domain else {}
        opts[Opt.BROADCAST] = o.ip(self.network.broadcast_address)
        return opts

    @cached_property
    def lease_options(self) -> dict[int, bytes]:
        return {
            Opt.LEASE_TIME: o.u32(self.lease_time),
            Opt.RENEWAL_TIME: o.u32(self.lease_time // 2),
            Opt.REBINDING_TIME: o.u32(self.lease_time * 7 // 8),
        }


@dataclass(frozen=True)
class Assignment:
    """The address this client gets (a node's reservation or a dynamic pool address) and, for a
    boot client, the boot decision (provisiond.boot) whose loader is the boot file."""

    ip: IPv4Address
    hostname: str | None = None  # None for a pool address
    boot: BootSpec | None = None


class Action(StrEnum):
    OFFER = "offer"
    ACK = "ack"
    NAK = "nak"
    INFORM = "inform"
    RELEASE = "release"
    DECLINE = "decline"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Decision:
    """The answer (if any), where to send it, and what the server must record."""

    action: Action
    reason: str
    reply: DhcpPacket | None = None
    destination: tuple[IPv4Address, int] | None = None
    lease: IPv4Address | None = None  # save this lease (ACK of an address)
    boot_file: str | None = None


def ignore(reason: str) -> Decision:
    return Decision(Action.IGNORE, reason)


def is_ipxe(request: DhcpPacket) -> bool:
    return b"iPXE" in request.user_classes


def is_netboot_client(request: DhcpPacket) -> bool:
    """Firmware or a boot loader asking to boot (not an OS's DHCP client)."""
    vendor = request.vendor_class
    return (
        vendor.startswith(("PXEClient", "HTTPClient"))
        or Opt.CLIENT_ARCH in request.options
        or is_ipxe(request)
    )


def _reply(request: DhcpPacket, mtype: MessageType, site: Site, yiaddr: IPv4Address) -> DhcpPacket:
    return DhcpPacket(
        op=BOOTREPLY, xid=request.xid, chaddr=request.chaddr, htype=request.htype,
        hops=request.hops, flags=request.flags, giaddr=request.giaddr, yiaddr=yiaddr,
        options={Opt.MESSAGE_TYPE: bytes([mtype]), Opt.SERVER_ID: site.server_id},
    )


def _add_network_options(
    reply: DhcpPacket, request: DhcpPacket, site: Site, who: Assignment
) -> None:
    opts = reply.options
    opts.update(site.network_options)
    if who.hostname:
        opts[Opt.HOSTNAME] = o.text(who.hostname)
    opts.update(site.tail_options)
    if site.ntp and Opt.NTP in request.parameter_list:
        opts[Opt.NTP] = o.ips(site.ntp)


def _add_lease_options(reply: DhcpPacket, site: Site) -> None:
    reply.options.update(site.lease_options)


def _add_boot_options(reply: DhcpPacket, request: DhcpPacket, site: Site, file: str) -> None:
    reply.siaddr = site.server
    reply.file = file.encode("ascii")
    opts = reply.options
    vendor = request.vendor_class
    if vendor.startswith("HTTPClient"):
        opts[Opt.VENDOR_CLASS] = b"HTTPClient"  # UEFI HTTP boot ignores offers without it
    elif vendor.startswith("PXEClient"):
        opts[Opt.VENDOR_CLASS] = b"PXEClient"
        opts[Opt.VENDOR_SPECIFIC] = o.PXE_VENDOR_OPTIONS
    opts[Opt.TFTP_SERVER] = o.text(str(site.server))
    opts[Opt.BOOTFILE] = reply.file
    uuid = request.options.get(Opt.CLIENT_UUID)
    if uuid is not None:
        opts[Opt.CLIENT_UUID] = uuid  # the PXE spec asks servers to echo the client's UUID


def _destination(request: DhcpPacket, reply: DhcpPacket) -> tuple[IPv4Address, int]:
    """RFC 2131 section 4.1: to the relay, else to ciaddr, else broadcast.

    A client without an address is always answered by broadcast (never the ARP-less unicast
    to yiaddr): every client accepts it, and no ARP entry has to be forged.
    """
    if request.giaddr != ZERO:
        if reply.message_type is MessageType.NAK:
            reply.flags |= FLAG_BROADCAST
        return request.giaddr, SERVER_PORT
    if request.ciaddr != ZERO and reply.message_type is not MessageType.NAK:
        return request.ciaddr, CLIENT_PORT
    return BROADCAST, CLIENT_PORT


def _finish(reply: DhcpPacket, request: DhcpPacket) -> DhcpPacket:
    subnet = request.options.get(Opt.SUBNET_SELECTION)
    if subnet is not None:
        reply.options[Opt.SUBNET_SELECTION] = subnet  # RFC 3011: return an identical copy
    agent = request.options.get(Opt.RELAY_AGENT)
    if agent is not None:
        reply.options[Opt.RELAY_AGENT] = agent  # RFC 3046: echo option 82, last
    return reply


def _nak(request: DhcpPacket, site: Site, why: str) -> Decision:
    reply = _reply(request, MessageType.NAK, site, ZERO)
    reply.options[Opt.MESSAGE] = o.text(why)
    _finish(reply, request)
    return Decision(Action.NAK, why, reply, _destination(request, reply))


def decide(
    request: DhcpPacket, who: Assignment | None, site: Site, *,
    port: int = SERVER_PORT, source: tuple[IPv4Address, int] | None = None,
) -> Decision:
    """Decide the answer to `request` received on `port` from `source`, for `site`: the
    network the request is for (see selection.py).

    `who` is None for a client provisiond does not know (no reservation, no pool): such a
    client never gets an answer, so provisiond is safe beside other machines.
    """
    if request.op != BOOTREQUEST:
        return ignore("not a BOOTREQUEST (a reply from another server)")
    if request.giaddr in (site.network.network_address, site.network.broadcast_address):
        return ignore(f"relay {request.giaddr} is the network's own or broadcast address, "
                      "not a relay's")
    mtype = request.message_type
    if who is None:
        return ignore("unknown MAC")
    if who.ip not in site.network:
        return ignore(f"the client's address {who.ip} is not on {site.network}, the network "
                      "this request comes from (the node is on another segment than the inventory says)")
    if site.proxy:
        return _decide_proxy(request, who, site, port, source)
    if mtype is MessageType.DISCOVER:
        return _lease_reply(request, who, site, MessageType.OFFER, Action.OFFER, "offer")
    if mtype is MessageType.REQUEST:
        return _decide_request(request, who, site)
    if mtype is MessageType.INFORM:
        reply = _reply(request, MessageType.ACK, site, ZERO)
        reply.ciaddr = request.ciaddr
        _add_network_options(reply, request, site, who)
        file = _boot(request, who, site)
        if file:
            _add_boot_options(reply, request, site, file)
        _finish(reply, request)
        destination = _destination(request, reply)
        return Decision(Action.INFORM, "inform", reply, destination, boot_file=file)
    if request.server_id != site.server:
        return ignore(f"{mtype.name} for another server ({request.server_id})")
    if mtype is MessageType.RELEASE:
        return Decision(Action.RELEASE, f"release of {request.ciaddr}")
    if mtype is MessageType.DECLINE:
        return Decision(Action.DECLINE, f"client says {request.requested_ip} is in use")
    return ignore(f"{mtype.name} is not sent by clients")


def _boot(request: DhcpPacket, who: Assignment, site: Site) -> str | None:
    return who.boot.loader if who.boot is not None and is_netboot_client(request) else None


def _lease_reply(
    request: DhcpPacket, who: Assignment, site: Site, mtype: MessageType, action: Action, why: str,
) -> Decision:
    reply = _reply(request, mtype, site, who.ip)
    if mtype is MessageType.ACK:
        reply.ciaddr = request.ciaddr
    _add_lease_options(reply, site)
    _add_network_options(reply, request, site, who)
    file = _boot(request, who, site)
    if file:
        _add_boot_options(reply, request, site, file)
    _finish(reply, request)
    return Decision(
        action, why, reply, _destination(request, reply),
        lease=who.ip if action is Action.ACK else None, boot_file=file,
    )


def _decide_request(request: DhcpPacket, who: Assignment, site: Site) -> Decision:
    """RFC 2131 section 4.3.2: SELECTING, INIT-REBOOT, RENEWING/REBINDING."""
    wanted = request.requested_ip
    if request.server_id is not None:
        if request.server_id != site.server:
            return ignore(f"client chose server {request.server_id}")
        if wanted != who.ip:
            return _nak(request, site, f"requested {wanted}, offered {who.ip}")
        return _lease_reply(request, who, site, MessageType.ACK, Action.ACK, "selecting")
    if wanted is not None:
        if wanted != who.ip:
            return _nak(request, site, f"requested {wanted}, reserved {who.ip}")
        return _lease_reply(request, who, site, MessageType.ACK, Action.ACK, "init-reboot")
    if request.ciaddr != ZERO:
        if request.ciaddr != who.ip:
            return _nak(request, site, f"renewing {request.ciaddr}, reserved {who.ip}")
        return _lease_reply(request, who, site, MessageType.ACK, Action.ACK, "renewing")
    return ignore("REQUEST without server id, requested address or ciaddr")


def _decide_proxy(
    request: DhcpPacket, who: Assignment, site: Site, port: int,
    source: tuple[IPv4Address, int] | None,
) -> Decision:
    """proxyDHCP (PXE spec 2.1): another server gives the address; we add only the boot offer.

    On port 67 a PXE client's DISCOVER gets an offer without an address; on port 4011 its
    REQUEST gets the ACK with the boot file, sent back to where it came from.
    """
    mtype = request.message_type
    if not request.vendor_class.startswith(("PXEClient", "HTTPClient")):
        return ignore("proxy mode answers PXE and HTTP boot clients only")
    file = _boot(request, who, site)
    if file is None:
        return ignore("no boot file for this client (boots local, or unknown architecture)")
    if port == PXE_PORT and mtype in (MessageType.REQUEST, MessageType.INFORM):
        reply = _reply(request, MessageType.ACK, site, ZERO)
        reply.ciaddr = request.ciaddr
        _add_boot_options(reply, request, site, file)
        has_source = source is not None and source[0] != ZERO
        destination = source if has_source else _destination(request, reply)
        _finish(reply, request)
        return Decision(Action.ACK, "proxy boot ack", reply, destination, boot_file=file)
    if port == SERVER_PORT and mtype is MessageType.DISCOVER:
        reply = _reply(request, MessageType.OFFER, site, ZERO)
        _add_boot_options(reply, request, site, file)
        _finish(reply, request)
        destination = _destination(request, reply)
        return Decision(Action.OFFER, "proxy offer", reply, destination, boot_file=file)
    return ignore(f"proxy mode does not answer {mtype.name} on port {port}")
