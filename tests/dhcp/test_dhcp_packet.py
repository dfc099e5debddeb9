"""Parse/build of DHCP messages: round trips, RFC 3396 long options, overload, and every
malformation the parser must name."""

from __future__ import annotations

import re
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisiond.dhcp.options import MessageType, Opt, user_classes
from provisiond.dhcp.packet import (
    BOOTREQUEST,
    HEADER,
    MAGIC_COOKIE,
    MIN_REPLY,
    DhcpPacket,
    MalformedPacket,
    build,
    encode_options,
    parse,
)

MAC = bytes.fromhex("525400123456")


def discover(**options: bytes) -> DhcpPacket:
    opts = {Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER])}
    opts.update({int(k.removeprefix("o")): v for k, v in options.items()})
    return DhcpPacket(op=BOOTREQUEST, xid=0x12345678, chaddr=MAC, options=opts)


def raw(options: bytes, cookie: bytes = MAGIC_COOKIE, hlen: int = 6, op: int = 1,
        sname: bytes = b"", file: bytes = b"") -> bytes:
    header = HEADER.pack(op, 1, hlen, 0, 1, 0, 0, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                         MAC, sname, file)
    return header + cookie + options


def test_round_trip_keeps_fields_and_options() -> None:
    packet = discover(o93=b"\x00\x07", o60=b"PXEClient:Arch:00007:UNDI:003016", o77=b"iPXE")
    packet.giaddr = IPv4Address("10.9.0.1")
    packet.hops = 1
    data = build(packet)
    assert len(data) >= MIN_REPLY
    back = parse(data)
    assert back == packet
    assert back.mac == "52:54:00:12:34:56"
    assert back.client_archs == (7,)
    assert back.user_classes == (b"iPXE",)
    assert back.message_type is MessageType.DISCOVER


def test_long_option_is_split_and_joined_rfc3396() -> None:
    value = bytes(range(256)) * 2  # 512 bytes: three option instances on the wire
    encoded = encode_options({Opt.VENDOR_SPECIFIC: value})
    assert encoded.count(bytes([Opt.VENDOR_SPECIFIC, 255])) == 2
    packet = discover(o43=value)
    assert parse(build(packet, max_size=2000)).options[Opt.VENDOR_SPECIFIC] == value


def test_option_overload_reads_file_and_sname() -> None:
    in_file = bytes([Opt.HOSTNAME, 4]) + b"node" + bytes([Opt.END])
    in_sname = bytes([Opt.DOMAIN, 3]) + b"lab" + bytes([Opt.END])
    opts = bytes([53, 1, 1, 52, 1, 3, 255])
    packet = parse(raw(opts, sname=in_sname, file=in_file))
    assert packet.hostname == "node"
    assert packet.options[Opt.DOMAIN] == b"lab"
    assert packet.file == b"" and packet.sname == b""


def test_user_class_rfc3004_and_bare_forms() -> None:
    assert user_classes(b"\x04iPXE\x03foo") == (b"iPXE", b"foo")
    assert user_classes(b"iPXE") == (b"iPXE",)


def test_build_refuses_oversized_message() -> None:
    packet = discover(o43=b"x" * 600)
    with pytest.raises(ValueError, match="client accepts 548"):
        build(packet)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes"),
        (raw(b"\x35\x01\x01\xff")[:239], "at least 240"),
        (raw(b"\x35\x01\x01\xff", cookie=b"\x63\x82\x53\x64"), "magic cookie is 63825364"),
        (raw(b"\x35\x01\x01\xff", hlen=17), "hlen is 17"),
        (raw(b"\x35\x01\x01\xff", hlen=4), "hlen is 4 for Ethernet"),
        (raw(b"\x35\x01\x01\xff", op=3), "op is 3"),
        (raw(b"\x35\x05\x01\xff"), "option 53 at offset 0 claims 5 bytes"),
        (raw(b"\x35"), "has no length byte"),
        (raw(b"\x35\x01\x01"), "no END option"),
        (raw(b"\x35\x02\x01\x01\xff"), "option 53 (message type) has length 2"),
        (raw(b"\x35\x01\x09\xff"), "unknown value 9"),
        (raw(b"\x0c\x01a\xff"), "BOOTP is not served"),
        (raw(b"\x35\x01\x03\x32\x03\x0a\x00\x01\xff"), "option 50 (requested IP) has length 3"),
        (raw(b"\x35\x01\x01\x5d\x03\x00\x00\x07\xff"),
         "option 93 (client architecture) has length 3"),
        (raw(b"\x35\x01\x01\x61\x05abcde\xff"), "option 97 (client UUID) has length 5"),
        (raw(b"\x35\x01\x01\x34\x01\x07\xff"), "option 52 (option overload) is 07"),
        (raw(b"\x35\x01\x01\x34\x01\x01\xff", file=b"\x0c\x7f"), "file: option 12 at offset 0"),
    ],
)
def test_malformed_packets_are_named(data: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=re.escape(message)):
        parse(data)


def test_max_message_size_floor() -> None:
    assert discover(o57=struct.pack("!H", 1500)).max_message_size == 1472
    assert discover(o57=struct.pack("!H", 100)).max_message_size == 548
    assert discover().max_message_size == 548


# -- fuzzing: whatever arrives, parse raises MalformedPacket or returns a packet -------------

def _parse_or_reject(data: bytes) -> None:
    try:
        packet = parse(data)
    except MalformedPacket:
        return
    # Every typed view the server reads must work on whatever parsed.
    assert packet.message_type in MessageType
    _ = (packet.mac, packet.requested_ip, packet.server_id, packet.parameter_list,
         packet.max_message_size, packet.vendor_class, packet.user_classes,
         packet.client_archs, packet.hostname, packet.broadcast)


option = st.tuples(st.integers(0, 255), st.binary(max_size=20)).map(
    lambda t: bytes([t[0], len(t[1])]) + t[1]
)
# Mostly-valid option streams with one random corruption: reaches deep parser paths.
option_stream = st.lists(option, max_size=12).map(b"".join)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_reject(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=option_stream, mtype=st.integers(0, 10), tail=st.binary(max_size=8),
    cut=st.integers(0, 400), flip=st.tuples(st.integers(0, 1000), st.integers(0, 255)),
    sname=st.binary(max_size=64), file=st.binary(max_size=128),
)
def test_fuzz_structured(options: bytes, mtype: int, tail: bytes, cut: int,
                         flip: tuple[int, int], sname: bytes, file: bytes) -> None:
    data = bytearray(raw(bytes([53, 1, mtype]) + options + tail, sname=sname, file=file))
    position, value = flip
    if position < len(data):
        data[position] = value
    _parse_or_reject(bytes(data[: len(data) - cut % 60]))
