"""Socket-free pieces of IPMI 2.0 the virtual BMC needs: cipher-suite negotiation, boot flags.

References are to the IPMI v2.0 rev 1.1 specification.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisiond.power.ipmi_spec import BOOT_DEVICES

# Cipher suite 3 (table 22-20): RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128. pyghmi's BMC side
# implements only this one (and advertises only it in Get Channel Cipher Suites).
SUITE_3 = (1, 1, 1)

# RMCP+ status codes (table 13-15) the virtual BMC answers with.
RMCP_OK = 0x00
RMCP_UNAUTHORIZED_NAME = 0x0D
RMCP_INVALID_NAME_LENGTH = 0x0C
RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_ILLEGAL_PARAMETER = 0x12

_BOOT_NAMES = {code: name for name, code in BOOT_DEVICES.items()}


class ProtocolError(ValueError):
    """A request the virtual BMC cannot make sense of (answered with an error code)."""


def proposed_algorithms(request: bytes | bytearray) -> tuple[int, int, int]:
    """(authentication, integrity, confidentiality) algorithms of an RMCP+ Open Session Request.

    Table 13-9: tag, privilege, 2 reserved, console session id (4), then three 8-byte payloads
    whose byte 4 is the algorithm number.
    """
    if len(request) < 32:
        raise ProtocolError(f"open session request too short ({len(request)} bytes, need 32)")
    payloads = [request[8 + 8 * i : 16 + 8 * i] for i in range(3)]
    for index, payload in enumerate(payloads):
        if payload[0] != index:
            raise ProtocolError(
                f"payload {index} of the open session request has type {payload[0]}"
            )
    return payloads[0][4] & 0x3F, payloads[1][4] & 0x3F, payloads[2][4] & 0x3F


def open_session_status(request: bytes | bytearray) -> int:
    """RMCP+ status for an Open Session Request: accept suite 3, refuse anything else.

    pyghmi's client proposes SHA-256 (suite 17) first and retries with suite 3 when refused;
    ipmitool picks a suite from Get Channel Cipher Suites. Accepting a proposal and then
    answering with other algorithms (what pyghmi's BMC does) breaks the client.
    """
    try:
        proposal = proposed_algorithms(request)
    except ProtocolError:
        return RMCP_ILLEGAL_PARAMETER
    return RMCP_OK if proposal == SUITE_3 else RMCP_NO_CIPHER_SUITE_MATCH


PAYLOAD_IPMI = 0x00
PAYLOAD_OPEN_SESSION_REQUEST = 0x10


def starts_conversation(packet: bytes | bytearray) -> bool:
    """True for an RMCP/IPMI packet outside any session: a sessionless IPMI 1.5 or 2.0 request
    (Get Channel Authentication Capabilities, Get Channel Cipher Suites) or an RMCP+ Open
    Session Request. RAKP messages also carry session id 0 but belong to a session.
    """
    if len(packet) < 14:
        return False
    auth_type = packet[4]
    if auth_type == 0x06:  # IPMI 2.0 / RMCP+ session header
        payload = packet[5] & 0x3F
        session_id = bytes(packet[6:10])
        return payload == PAYLOAD_OPEN_SESSION_REQUEST or (
            payload == PAYLOAD_IPMI and session_id == bytes(4)
        )
    return bytes(packet[9:13]) == bytes(4)  # IPMI 1.5 header: session id after the sequence


@dataclass(frozen=True)
class BootDevice:
    """A boot device override: which device, for the next boot only or for all, UEFI or BIOS."""

    device: str = "default"
    persistent: bool = False
    uefi: bool = False

    def describe(self) -> str:
        if self.device == "default":
            return "default (no override)"
        scope = "persistent" if self.persistent else "one-time"
        return f"{self.device} ({scope}, {'uefi' if self.uefi else 'bios'})"


def decode_boot_flags(data: bytes | bytearray | list[int]) -> BootDevice:
    """Boot flags parameter data (after the selector byte) of Set System Boot Options."""
    if len(data) < 2:
        raise ProtocolError(f"boot flags need at least 2 bytes, got {len(data)}")
    flags, selector = data[0], data[1]
    if not flags & 0x80:  # "boot flags valid" clear: no override
        return BootDevice()
    code = (selector >> 2) & 0x0F
    if code not in _BOOT_NAMES:
        raise ProtocolError(f"unknown boot device selector {code:#x}")
    return BootDevice(_BOOT_NAMES[code], persistent=bool(flags & 0x40), uefi=bool(flags & 0x20))


def encode_boot_flags(boot: BootDevice) -> list[int]:
    """Response data of Get System Boot Options for parameter 5 (boot flags)."""
    if boot.device == "default":
        return [1, 5, 0, 0, 0, 0, 0]
    flags = 0x80 | (0x40 if boot.persistent else 0) | (0x20 if boot.uefi else 0)
    return [1, 5, flags, BOOT_DEVICES[boot.device] << 2, 0, 0, 0]
