"""TFTP packets (RFC 1350, option extension RFC 2347): parse and build, no sockets.

Every malformed packet raises PacketError with a message that can go back to the peer in an
ERROR packet, so the server never has to guess why a request was refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8  # RFC 2347


class PacketError(ValueError):
    """A packet that does not follow the TFTP grammar."""


MODES = ("octet", "netascii")
# Longest request we accept (a filename plus a handful of options); a bigger one is an attack.
MAX_REQUEST = 2048
MAX_ERROR_MESSAGE = 512

_HEAD = struct.Struct("!HH")


@dataclass(frozen=True)
class Request:
    """RRQ or WRQ. Filename as sent (UTF-8); mode and option names lower-cased."""

    opcode: Opcode
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class OAck:
    options: dict[str, str]


Packet = Request | Data | Ack | Error | OAck


def _strings(body: bytes, what: str) -> list[bytes]:
    """Split NUL-terminated strings; the last one must be terminated too."""
    if not body.endswith(b"\0"):
        raise PacketError(f"{what}: last field is not NUL-terminated")
    return body[:-1].split(b"\0")


def _ascii(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise PacketError(f"{what} is not ASCII") from None
    if not text.isprintable():
        raise PacketError(f"{what} contains control characters")
    return text


def _options(fields: list[bytes], what: str) -> dict[str, str]:
    if len(fields) % 2:
        raise PacketError(f"{what}: option {fields[-1]!r} has no value")
    options: dict[str, str] = {}
    for i in range(0, len(fields), 2):
        name = _ascii(fields[i], "option name").lower()
        if not name:
            raise PacketError(f"{what}: empty option name")
        if name in options:
            raise PacketError(f"{what}: option {name!r} given twice")
        options[name] = _ascii(fields[i + 1], f"value of option {name!r}")
    return options


def _parse_request(opcode: Opcode, body: bytes) -> Request:
    if len(body) + 2 > MAX_REQUEST:
        raise PacketError(f"request longer than {MAX_REQUEST} bytes")
    fields = _strings(body, "request")
    if len(fields) < 2:
        raise PacketError("request needs a filename and a mode")
    try:
        filename = fields[0].decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError("filename is not valid UTF-8") from None
    mode = _ascii(fields[1], "mode").lower()
    return Request(opcode, filename, mode, _options(fields[2:], "request"))


def parse(data: bytes) -> Packet:
    """Decode one datagram; raises PacketError for anything malformed."""
    if len(data) < 2:
        raise PacketError("packet shorter than an opcode")
    code = int.from_bytes(data[:2], "big")
    try:
        opcode = Opcode(code)
    except ValueError:
        raise PacketError(f"unknown opcode {code}") from None
    body = data[2:]
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        return _parse_request(opcode, body)
    if opcode is Opcode.OACK:
        return OAck(_options(_strings(body, "OACK"), "OACK") if body else {})
    if len(body) < 2:
        raise PacketError(f"{opcode.name} packet without a block number or error code")
    number = int.from_bytes(body[:2], "big")
    if opcode is Opcode.DATA:
        return Data(number, bytes(body[2:]))
    if opcode is Opcode.ACK:
        if len(body) != 2:
            raise PacketError("ACK packet has trailing bytes")
        return Ack(number)
    message = body[2:].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Error(number, message)


def build_request(opcode: Opcode, filename: str, mode: str = "octet",
                  options: dict[str, str] | None = None) -> bytes:
    parts = [filename.encode("utf-8"), mode.encode("ascii")]
    for name, value in (options or {}).items():
        parts += [name.encode("ascii"), str(value).encode("ascii")]
    return _HEAD.pack(opcode, 0)[:2] + b"".join(p + b"\0" for p in parts)


def build_data(block: int, payload: bytes) -> bytes:
    return _HEAD.pack(Opcode.DATA, block & 0xFFFF) + payload


def build_ack(block: int) -> bytes:
    return _HEAD.pack(Opcode.ACK, block & 0xFFFF)


def build_error(code: int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")[:MAX_ERROR_MESSAGE]
    return _HEAD.pack(Opcode.ERROR, code) + text + b"\0"


def build_oack(options: dict[str, str]) -> bytes:
    body = b"".join(f"{name}\0{value}\0".encode("ascii") for name, value in options.items())
    return _HEAD.pack(Opcode.OACK, 0)[:2] + body


def to_netascii(data: bytes) -> bytes:
    """RFC 764 line ends for mode netascii: LF becomes CR LF, a bare CR becomes CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
