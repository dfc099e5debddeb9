"""A sessionless IPMI presence probe: Get Channel Authentication Capabilities over RMCP.

Socket-free: builds the request and checks the answer. The driver sends it on its own UDP
socket before handing a BMC to pyghmi, so a BMC that does not answer never enters pyghmi's
shared I/O loop, where dead BMCs stall the logins of live ones in the same process. ipmitool
starts every lanplus session with the same request.
"""

from __future__ import annotations

from provisiond.power.ipmi_spec import BMC_ADDRESS, CMD_GET_CHANNEL_AUTH_CAP, NETFN_APP, REMOTE_SWID

RMCP_HEADER = bytes([0x06, 0x00, 0xFF, 0x07])  # version 1, no ack, class IPMI


class ProbeError(ValueError):
    """An answer that is not a valid Get Channel Authentication Capabilities response."""


def _checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def auth_cap_request(sequence: int) -> bytes:
    """The request (IPMI 1.5 session wrapper, auth type none), for channel 'this one' (0xE).

    Data byte 1 sets bit 7 to ask for IPMI 2.0 extended capabilities; byte 2 asks about the
    administrator privilege level.
    """
    header = bytes([BMC_ADDRESS, NETFN_APP << 2])
    body = bytes([REMOTE_SWID, (sequence & 0x3F) << 2, CMD_GET_CHANNEL_AUTH_CAP, 0x8E, 0x04])
    message = header + bytes([_checksum(header)]) + body + bytes([_checksum(body)])
    session = bytes([0x00]) + bytes(4) + bytes(4) + bytes([len(message)])
    return RMCP_HEADER + session + message


def check_auth_cap_response(packet: bytes, sequence: int) -> bool:
    """True if `packet` answers auth_cap_request(sequence) and says IPMI 2.0 is supported.

    Raises ProbeError for a packet that is not such an answer (to be ignored by the caller).
    """
    if len(packet) < 4 + 10 + 7 + 1 or packet[:4] != RMCP_HEADER:
        raise ProbeError("not an RMCP/IPMI packet")
    if packet[4] != 0x00:
        raise ProbeError(f"unexpected session auth type {packet[4]:#x} in a sessionless answer")
    length = packet[13]
    message = packet[14 : 14 + length]
    if len(message) != length or length < 8:
        raise ProbeError("truncated IPMI message")
    if message[1] >> 2 != NETFN_APP + 1 or message[5] != CMD_GET_CHANNEL_AUTH_CAP:
        raise ProbeError("not a Get Channel Authentication Capabilities response")
    if message[4] >> 2 != sequence & 0x3F:
        raise ProbeError("answer to another request (sequence number)")
    if message[6] != 0x00:
        raise ProbeError(f"completion code {message[6]:#x}")
    data = message[7:-1]
    # data[1] bit 7: IPMI 2.0 extended data present; data[3] bit 1: IPMI 2.0 connections.
    return len(data) >= 4 and bool(data[1] & 0x80) and bool(data[3] & 0x02)
