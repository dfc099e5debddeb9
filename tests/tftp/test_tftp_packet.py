"""Packet parse/build (RFC 1350, 2347): round trips, and malformed input always a PacketError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisiond.tftp import packet
from provisiond.tftp.packet import Opcode, PacketError


def test_rrq_with_options_round_trip() -> None:
    raw = packet.build_request(Opcode.RRQ, "pxelinux.cfg/01-aa", "OCTET",
                               {"BlkSize": "1468", "tsize": "0"})
    assert raw == b"\x00\x01pxelinux.cfg/01-aa\x00OCTET\x00BlkSize\x001468\x00tsize\x000\x00"
    parsed = packet.parse(raw)
    assert parsed == packet.Request(Opcode.RRQ, "pxelinux.cfg/01-aa", "octet",
                                    {"blksize": "1468", "tsize": "0"})


def test_data_ack_error_oack_round_trip() -> None:
    assert packet.parse(packet.build_data(70000, b"abc")) == packet.Data(70000 & 0xFFFF, b"abc")
    assert packet.build_ack(65536) == b"\x00\x04\x00\x00"  # block numbers wrap at 16 bits
    assert packet.parse(packet.build_ack(7)) == packet.Ack(7)
    assert packet.parse(packet.build_error(1, "file not found: x")) == packet.Error(
        1, "file not found: x")
    assert packet.parse(packet.build_oack({"blksize": "1468"})) == packet.OAck(
        {"blksize": "1468"})


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "shorter than an opcode"),
    (b"\x00\x09abc", "unknown opcode 9"),
    (b"\x00\x01file\x00octet", "not NUL-terminated"),
    (b"\x00\x01file\x00", "needs a filename and a mode"),
    (b"\x00\x01file\x00octet\x00blksize\x00", "has no value"),
    (b"\x00\x01file\x00octet\x00tsize\x000\x00TSIZE\x000\x00", "given twice"),
    (b"\x00\x01\xff\xfe\x00octet\x00", "not valid UTF-8"),
    (b"\x00\x01file\x00oc\x01tet\x00", "control characters"),
    (b"\x00\x01" + b"a" * 3000 + b"\x00octet\x00", "longer than"),
    (b"\x00\x04\x00", "without a block number"),
    (b"\x00\x04\x00\x01\x00", "trailing bytes"),
])
def test_malformed_packets_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        packet.parse(raw)


def test_nul_inside_a_filename_cannot_smuggle_a_name() -> None:
    """On the wire a NUL ends the filename: 'secret\\0.cfg' is not a request for secret."""
    with pytest.raises(PacketError):
        packet.parse(b"\x00\x01secret\x00.cfg\x00octet\x00")


def test_netascii_line_ends() -> None:
    assert packet.to_netascii(b"a\nb\rc\r\n") == b"a\r\nb\r\0c\r\0\r\n"


@given(st.binary(max_size=600))
def test_parse_never_fails_otherwise(raw: bytes) -> None:
    try:
        parsed = packet.parse(raw)
    except PacketError as exc:
        assert str(exc)  # a reason the peer can be told
    else:
        assert isinstance(parsed, packet.Request | packet.Data | packet.Ack | packet.Error
                          | packet.OAck)


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=100)
       .filter(lambda s: "\0" not in s),
       st.dictionaries(st.sampled_from(["blksize", "tsize", "timeout", "windowsize"]),
                       st.integers(0, 70000).map(str)))
def test_request_round_trip(name: str, options: dict[str, str]) -> None:
    parsed = packet.parse(packet.build_request(Opcode.RRQ, name, "netascii", options))
    assert parsed == packet.Request(Opcode.RRQ, name, "netascii", options)
