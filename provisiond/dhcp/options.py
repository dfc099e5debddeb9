"""DHCP option codes (RFC 2132, RFC 4578, RFC 3004, RFC 3046) and their encoders.

Pure functions only: the wire format of single option values. Packet framing (pad, end,
option overload, long-option splitting) lives in `packet.py`.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from ipaddress import IPv4Address


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 section 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """The option codes provisiond reads or writes."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    DOMAIN = 15
    BROADCAST = 28
    NTP = 42
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    RELAY_AGENT = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    SUBNET_SELECTION = 118  # RFC 3011
    END = 255


# Relay agent information (option 82) sub-options: RFC 3046 and RFC 3527.
AGENT_LINK_SELECTION = 5


def sub_options(value: bytes) -> dict[int, bytes]:
    """Decode a code/length/value list (option 82's sub-options); a truncated tail is dropped
    (the relay's option is echoed as it came, never re-encoded)."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos + 2 <= len(value):
        code, length = value[pos], value[pos + 1]
        if pos + 2 + length > len(value):
            break
        found.setdefault(code, value[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return found


# RFC 4578 section 2.1 / IANA "Processor Architecture Types" values provisiond acts on.
ARCH_BIOS = 0
ARCH_EFI_BC = 7
ARCH_EFI_X86_64 = 9
ARCH_EFI_X86_64_HTTP = 16

# PXE spec option 43 sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: "boot from the file name in
# this offer, skip boot server discovery". Sent with option 60 = PXEClient so PXE ROMs and
# iPXE do not wait for a separate proxyDHCP offer.
PXE_VENDOR_OPTIONS = bytes([6, 1, 8, 255])


def ip(address: IPv4Address | str) -> bytes:
    return IPv4Address(address).packed


def ips(addresses: list[IPv4Address] | tuple[IPv4Address, ...]) -> bytes:
    return b"".join(IPv4Address(a).packed for a in addresses)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def text(value: str) -> bytes:
    return value.encode("ascii")


def user_classes(value: bytes) -> tuple[bytes, ...]:
    """Decode option 77. RFC 3004 says length-prefixed items; iPXE and others send one bare
    string. Take the RFC form only when it covers the value exactly, else the bare string."""
    items: list[bytes] = []
    pos = 0
    while pos < len(value):
        length = value[pos]
        if length == 0 or pos + 1 + length > len(value):
            return (value,)
        items.append(value[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return tuple(items) if items else (value,)
