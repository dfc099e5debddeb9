"""Socket-free parts: cipher-suite negotiation, boot flags, error classification, sharding."""

from __future__ import annotations

import socket

import pytest
from pyghmi.exceptions import IpmiException

from provisiond.lab.ipmi_proto import (
    RMCP_ILLEGAL_PARAMETER,
    RMCP_NO_CIPHER_SUITE_MATCH,
    RMCP_OK,
    BootDevice,
    ProtocolError,
    decode_boot_flags,
    encode_boot_flags,
    open_session_status,
    proposed_algorithms,
    starts_conversation,
)
from provisiond.lab.vbmc import MemoryMachine
from provisiond.power.base import BmcTarget, ErrorKind
from provisiond.power.fanout import PowerConfig, shard
from provisiond.power.ipmi import classify
from provisiond.power.rmcp import ProbeError, auth_cap_request, check_auth_cap_response

TARGET = BmcTarget("n1", "10.0.0.5", 623, "admin", "hunter2")


def open_request(auth: int, integrity: int, conf: int) -> bytes:
    """An RMCP+ Open Session Request as pyghmi and ipmitool build it (table 13-9)."""
    head = bytes([7, 0, 0, 0]) + (0xA0A2A3A4).to_bytes(4, "little")
    payloads = b"".join(bytes([i, 0, 0, 8, alg, 0, 0, 0]) for i, alg in enumerate((auth, integrity, conf)))
    return head + payloads


def test_suite_3_is_accepted_and_sha256_refused_so_clients_fall_back() -> None:
    assert proposed_algorithms(open_request(1, 1, 1)) == (1, 1, 1)
    assert open_session_status(open_request(1, 1, 1)) == RMCP_OK
    # pyghmi's first proposal (suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES)
    assert open_session_status(open_request(3, 4, 1)) == RMCP_NO_CIPHER_SUITE_MATCH
    assert open_session_status(b"\x00" * 10) == RMCP_ILLEGAL_PARAMETER


def test_malformed_open_session_request_is_a_protocol_error() -> None:
    bad = bytearray(open_request(1, 1, 1))
    bad[8] = 2  # first payload must be the authentication payload (type 0)
    with pytest.raises(ProtocolError, match="payload 0"):
        proposed_algorithms(bad)


@pytest.mark.parametrize("boot", [
    BootDevice("network", persistent=False, uefi=True),
    BootDevice("network", persistent=True, uefi=False),
    BootDevice("hd", persistent=False, uefi=False),
    BootDevice(),
])
def test_boot_flags_round_trip(boot: BootDevice) -> None:
    encoded = encode_boot_flags(boot)
    assert encoded[:2] == [1, 5]
    assert decode_boot_flags(encoded[2:]) == boot


def test_boot_flags_as_ipmitool_sends_them() -> None:
    # `ipmitool chassis bootdev pxe options=efiboot`: valid + EFI, PXE selector 0x04
    assert decode_boot_flags([0xA0, 0x04, 0, 0, 0]) == BootDevice("network", uefi=True)
    assert decode_boot_flags([0x00, 0x04]) == BootDevice()  # valid bit clear: no override
    with pytest.raises(ProtocolError, match="selector"):
        decode_boot_flags([0x80, 0x07 << 2])


def test_memory_machine_consumes_a_one_time_override_at_the_next_boot() -> None:
    changes: list[str] = []
    machine = MemoryMachine("m", on_change=changes.append)
    machine.set_boot_device(BootDevice("network", uefi=True))
    machine.set_power("on")
    assert machine.boots == [BootDevice("network", uefi=True)]
    assert machine.get_boot_device() == BootDevice()
    machine.set_power("reset")
    assert machine.boots[-1] == BootDevice()  # back to the disk
    machine.set_boot_device(BootDevice("network", persistent=True))
    machine.set_power("reset")
    machine.set_power("reset")
    assert machine.boots[-2:] == [BootDevice("network", persistent=True)] * 2
    machine.set_power("soft")
    assert not machine.get_power()
    assert "m boots from network (one-time, uefi)" in changes


@pytest.mark.parametrize(("error", "during_login", "kind"), [
    (IpmiException("Incorrect password provided"), True, ErrorKind.AUTH),
    (IpmiException("Unauthorized name in RAKP2"), True, ErrorKind.AUTH),
    (IpmiException("No Cipher suite match with proposed security algorithms"), True, ErrorKind.CIPHER),
    (IpmiException(None), True, ErrorKind.UNREACHABLE),
    (IpmiException("timeout", 0xFFFF), False, ErrorKind.TIMEOUT),
    (IpmiException("Node Busy", 0xC0), False, ErrorKind.BUSY),
    (IpmiException("Insufficient resources to create new session"), True, ErrorKind.BUSY),
    (IpmiException("Command not supported in present state", 0xD5), False, ErrorKind.REFUSED),
    (IpmiException("Invalid data field in request", 0xCC), False, ErrorKind.REFUSED),
    (OSError(101, "Network is unreachable"), True, ErrorKind.UNREACHABLE),
    (KeyError("x"), False, ErrorKind.PROTOCOL),
])
def test_classify_names_the_bmc_and_never_the_password(
    error: Exception, during_login: bool, kind: ErrorKind,
) -> None:
    result = classify(error, TARGET, during_login)
    assert result.kind is kind
    assert "10.0.0.5:623" in str(result)
    assert "hunter2" not in str(result)
    assert kind.transient == (kind is ErrorKind.BUSY)


def test_target_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(TARGET)


def test_shards_are_bounded_and_keep_one_bmc_together() -> None:
    targets = [BmcTarget(f"n{i}", "127.0.0.1", 1000 + i // 2) for i in range(10)]  # 2 names per BMC
    parts = shard(targets, 2)
    assert [len({t.key for t in part}) for part in parts] == [2, 2, 1]
    assert sorted(t.name for part in parts for t in part) == sorted(t.name for t in targets)
    for part in parts:
        for other in parts:
            if other is not part:
                assert not {t.key for t in part} & {t.key for t in other}


def test_power_config_rejects_nonsense_and_bounds_a_node() -> None:
    with pytest.raises(ValueError):
        PowerConfig(timeout=0)
    with pytest.raises(ValueError):
        PowerConfig(concurrency=0)
    config = PowerConfig(timeout=2, retries=2, backoff=0.5)
    assert config.call_bound() == 3 * 2 + 0.5 + 1.0
    assert config.node_bound("status") == config.call_bound()
    assert config.node_bound("pxe-boot") == 4 * config.call_bound()


def auth_cap_answer(sequence: int, ipmi20: bool = True, code: int = 0) -> bytes:
    """A Get Channel Authentication Capabilities response as a BMC sends it (IPMI 1.5 wrapper)."""
    data = bytes([1, 0x80 if ipmi20 else 0x04, 0x04, 0x02 if ipmi20 else 0, 0, 0, 0, 0])
    head = bytes([0x81, 0x07 << 2])
    body = bytes([0x20, sequence << 2, 0x38, code]) + data
    message = head + bytes([(-sum(head)) & 0xFF]) + body + bytes([(-sum(body)) & 0xFF])
    return bytes([6, 0, 0xFF, 7, 0]) + bytes(8) + bytes([len(message)]) + message


def test_presence_probe_request_is_a_valid_ipmi_15_message() -> None:
    packet = auth_cap_request(5)
    assert packet[:4] == bytes([6, 0, 0xFF, 7])
    message = packet[14:]
    assert len(message) == packet[13]
    assert sum(message[:3]) & 0xFF == 0 and sum(message[3:]) & 0xFF == 0  # both checksums
    assert message[5] == 0x38 and message[6] == 0x8E  # channel E, IPMI 2.0 extended data


def test_presence_probe_answer_checks() -> None:
    assert check_auth_cap_response(auth_cap_answer(5), 5) is True
    assert check_auth_cap_response(auth_cap_answer(5, ipmi20=False), 5) is False
    with pytest.raises(ProbeError, match="sequence"):
        check_auth_cap_response(auth_cap_answer(6), 5)
    with pytest.raises(ProbeError, match="completion code"):
        check_auth_cap_response(auth_cap_answer(5, code=0xC1), 5)
    with pytest.raises(ProbeError):
        check_auth_cap_response(b"garbage", 5)


def test_starts_conversation_tells_new_conversations_from_session_traffic() -> None:
    open_session = bytes([6, 0, 0xFF, 7, 6, 0x10]) + bytes(4) + bytes(4) + bytes([32, 0]) + bytes(32)
    rakp1 = bytes([6, 0, 0xFF, 7, 6, 0x12]) + bytes(4) + bytes(4) + bytes([32, 0]) + bytes(32)
    cipher_suites = bytes([6, 0, 0xFF, 7, 6, 0x00]) + bytes(4) + bytes(4) + bytes([8, 0]) + bytes(8)
    in_session = bytes([6, 0, 0xFF, 7, 6, 0xC0]) + bytes([1, 2, 3, 4]) + bytes(4) + bytes([16, 0]) + bytes(16)
    assert starts_conversation(auth_cap_request(1))
    assert starts_conversation(open_session)
    assert starts_conversation(cipher_suites)
    assert not starts_conversation(rakp1)
    assert not starts_conversation(in_session)
    assert not starts_conversation(b"\x06\x00")


def test_pyghmi_reads_never_toggle_a_socket_to_blocking_races() -> None:
    """The I/O thread's read must neither block nor flip the mode a sender relies on."""
    from pyghmi.ipmi.private import session

    from provisiond.power import pyghmi_fixes
    from provisiond.power.ipmi import IpmiDriver

    original = session._io_recvfrom
    try:
        session._io_recvfrom = unfixed = lambda sock, size: None  # pyghmi's own, say
        import provisiond.lab.vbmc  # noqa: F401 (importing changes nothing)

        assert session._io_recvfrom is unfixed
        IpmiDriver(BmcTarget("n", "127.0.0.1", 623, "admin", "x"))  # applied at start-up
        assert session._io_recvfrom is pyghmi_fixes._io_recvfrom
    finally:
        session._io_recvfrom = original
    pyghmi_fixes.apply()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(True)  # as pyghmi's _io_sendto leaves it
        assert session._io_recvfrom(sock, 100) is None  # returns at once: nothing waiting
        assert sock.getblocking()
        sock.sendto(b"ping", sock.getsockname())
        data, _ = session._io_recvfrom(sock, 100)
        assert data == b"ping"
