"""BOOTP/DHCP message parse and build (RFC 951, RFC 2131, RFC 2132, RFC 3396), no sockets.

`parse` is strict: every length is checked and any inconsistency raises MalformedPacket with
what was wrong and where, so the server can count and drop the packet. It never raises
anything else on any input (the fuzz test holds it to that).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address

from provisiond.dhcp.options import MessageType, Opt, user_classes

MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, then the magic cookie
MIN_LENGTH = HEADER.size + len(MAGIC_COOKIE)
# The smallest message every client must accept (RFC 2131 section 2), IP and UDP headers included.
MIN_MAX_MESSAGE = 576
IP_UDP_HEADERS = 28
# Many BOOTP-era clients drop replies shorter than the 300-byte BOOTP message.
MIN_REPLY = 300
ZERO = IPv4Address(0)
END = bytes([Opt.END])
_MESSAGE_TYPES = {int(t): t for t in MessageType}


class MalformedPacket(ValueError):
    """The bytes are not a well-formed DHCP message; the message says what and where."""


@dataclass
class DhcpPacket:
    """One DHCP message. `options` holds raw values by code, long options already joined."""

    op: int
    xid: int
    chaddr: bytes
    htype: int = HTYPE_ETHERNET
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    # -- typed views of the options a server reads --------------------------------------

    @property
    def mac(self) -> str:
        return self.chaddr.hex(":")

    @property
    def message_type(self) -> MessageType:
        return _MESSAGE_TYPES[self.options[Opt.MESSAGE_TYPE][0]]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    def _ip_option(self, code: int) -> IPv4Address | None:
        value = self.options.get(code)
        return None if value is None else address(value)

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._ip_option(Opt.REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._ip_option(Opt.SERVER_ID)

    @property
    def parameter_list(self) -> bytes:
        return self.options.get(Opt.PARAMETER_LIST, b"")

    @property
    def max_message_size(self) -> int:
        """Largest DHCP payload (without IP/UDP headers) the client accepts."""
        value = self.options.get(Opt.MAX_MESSAGE_SIZE)
        size = struct.unpack("!H", value)[0] if value else MIN_MAX_MESSAGE
        return max(size, MIN_MAX_MESSAGE) - IP_UDP_HEADERS

    @property
    def vendor_class(self) -> str:
        return self.options.get(Opt.VENDOR_CLASS, b"").decode("ascii", "replace")

    @property
    def user_classes(self) -> tuple[bytes, ...]:
        value = self.options.get(Opt.USER_CLASS)
        return user_classes(value) if value else ()

    @property
    def client_archs(self) -> tuple[int, ...]:
        value = self.options.get(Opt.CLIENT_ARCH, b"")
        return tuple(struct.unpack(f"!{len(value) // 2}H", value))

    @property
    def hostname(self) -> str | None:
        value = self.options.get(Opt.HOSTNAME)
        return value.decode("ascii", "replace") if value else None


# Options whose value has a fixed length or a fixed unit; checked at parse time so the rest of
# the server can trust the typed views above.
_FIXED = {
    Opt.MESSAGE_TYPE: 1, Opt.REQUESTED_IP: 4, Opt.SERVER_ID: 4, Opt.MAX_MESSAGE_SIZE: 2,
    Opt.LEASE_TIME: 4, Opt.OVERLOAD: 1, Opt.CLIENT_NDI: 3, Opt.SUBNET_SELECTION: 4,
}
_NAMES = {
    Opt.MESSAGE_TYPE: "message type", Opt.REQUESTED_IP: "requested IP", Opt.SERVER_ID: "server id",
    Opt.MAX_MESSAGE_SIZE: "max message size", Opt.LEASE_TIME: "lease time",
    Opt.OVERLOAD: "option overload", Opt.CLIENT_NDI: "client NDI",
    Opt.SUBNET_SELECTION: "subnet selection",
}


def _read_options(data: bytes, where: str, into: dict[int, bytearray]) -> None:
    """Read one option area (RFC 2132 section 2); repeated codes are joined (RFC 3396)."""
    pos, end = 0, len(data)
    while pos < end:
        code = data[pos]
        if code == Opt.END:
            return
        if code == Opt.PAD:
            pos += 1
            continue
        if pos + 1 >= end:
            raise MalformedPacket(f"{where}: option {code} at offset {pos} has no length byte")
        length = data[pos + 1]
        if pos + 2 + length > end:
            raise MalformedPacket(
                f"{where}: option {code} at offset {pos} claims {length} bytes, "
                f"only {end - pos - 2} left"
            )
        into.setdefault(code, bytearray()).extend(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    # An option area that ends without END is accepted only in sname/file (they are fixed
    # size); the main area must be terminated.
    if where == "options":
        raise MalformedPacket("options: no END option (255) before the end of the packet")


def _check_options(options: dict[int, bytes]) -> None:
    for code, size in _FIXED.items():
        value = options.get(code)
        if value is not None and len(value) != size:
            raise MalformedPacket(
                f"option {code} ({_NAMES[code]}) has length {len(value)}, expected {size}"
            )
    mtype = options.get(Opt.MESSAGE_TYPE)
    if mtype is None:
        raise MalformedPacket("option 53 (message type) is missing: BOOTP is not served")
    if not 1 <= mtype[0] <= 8:
        raise MalformedPacket(f"option 53 (message type) has unknown value {mtype[0]}")
    arch = options.get(Opt.CLIENT_ARCH)
    if arch is not None and (len(arch) == 0 or len(arch) % 2):
        raise MalformedPacket(
            f"option 93 (client architecture) has length {len(arch)}, expected a multiple of 2"
        )
    uuid = options.get(Opt.CLIENT_UUID)
    if uuid is not None and len(uuid) not in (0, 17):
        raise MalformedPacket(f"option 97 (client UUID) has length {len(uuid)}, expected 0 or 17")


@lru_cache(maxsize=4096)
def address(packed: bytes) -> IPv4Address:
    """IPv4Address from 4 bytes, cached: most fields are 0.0.0.0 or one of a few relays."""
    return IPv4Address(packed)


def parse(data: bytes) -> DhcpPacket:
    """Parse one DHCP message, or raise MalformedPacket saying what is wrong."""
    if len(data) < MIN_LENGTH:
        raise MalformedPacket(
            f"packet has {len(data)} bytes, a DHCP message has at least {MIN_LENGTH}"
        )
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     bootfile) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket(f"op is {op}, expected 1 (request) or 2 (reply)")
    if hlen > 16:
        raise MalformedPacket(f"hlen is {hlen}, the chaddr field holds at most 16")
    if htype == HTYPE_ETHERNET and hlen != 6:
        raise MalformedPacket(f"hlen is {hlen} for Ethernet (htype 1), expected 6")
    cookie = data[HEADER.size:MIN_LENGTH]
    if cookie != MAGIC_COOKIE:
        raise MalformedPacket(f"magic cookie is {cookie.hex()}, expected 63825363")
    raw: dict[int, bytearray] = {}
    _read_options(data[MIN_LENGTH:], "options", raw)
    overload = raw.get(Opt.OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise MalformedPacket(
                f"option 52 (option overload) is {bytes(overload).hex()}, expected 1, 2 or 3"
            )
        # RFC 2131 section 4.1: file first, then sname.
        if overload[0] & 1:
            _read_options(bootfile, "file", raw)
        if overload[0] & 2:
            _read_options(sname, "sname", raw)
    options = {code: bytes(value) for code, value in raw.items()}
    _check_options(options)
    return DhcpPacket(
        op=op, xid=xid, chaddr=chaddr[:hlen], htype=htype, hops=hops, secs=secs, flags=flags,
        ciaddr=address(ciaddr), yiaddr=address(yiaddr), siaddr=address(siaddr),
        giaddr=address(giaddr),
        sname=b"" if overload and overload[0] & 2 else sname.rstrip(b"\0"),
        file=b"" if overload and overload[0] & 1 else bootfile.rstrip(b"\0"),
        options=options,
    )


def encode_options(options: dict[int, bytes]) -> bytes:
    """Options in insertion order, values over 255 bytes split (RFC 3396), then END."""
    parts = []
    for code, value in options.items():
        size = len(value)
        if size <= 255:
            parts.append(_HEADS[code][size] + value)
            continue
        for start in range(0, size, 255):
            chunk = value[start : start + 255]
            parts.append(_HEADS[code][len(chunk)] + chunk)
    parts.append(END)
    return b"".join(parts)


# Every (code, length) pair pre-encoded: building replies is the server's inner loop.
_HEADS = [[bytes((code, size)) for size in range(256)] for code in range(256)]


def build(packet: DhcpPacket, max_size: int = MIN_MAX_MESSAGE - IP_UDP_HEADERS) -> bytes:
    """Serialize a message; raise ValueError if it does not fit in `max_size` bytes."""
    if len(packet.chaddr) > 16:
        raise ValueError(f"chaddr has {len(packet.chaddr)} bytes, at most 16 fit")
    if len(packet.sname) > 63 or len(packet.file) > 127:
        raise ValueError("sname is limited to 63 bytes and file to 127 (one NUL terminator)")
    header = HEADER.pack(
        packet.op, packet.htype, len(packet.chaddr), packet.hops, packet.xid, packet.secs,
        packet.flags, packet.ciaddr.packed, packet.yiaddr.packed, packet.siaddr.packed,
        packet.giaddr.packed, packet.chaddr, packet.sname, packet.file,
    )
    data = header + MAGIC_COOKIE + encode_options(packet.options)
    if len(data) > max_size:
        raise ValueError(f"message is {len(data)} bytes, the client accepts {max_size}")
    return data.ljust(MIN_REPLY, b"\0")
