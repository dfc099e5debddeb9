"""A live `provisiond serve` (DHCP, TFTP, HTTP in a network namespace) keeps serving a
legitimate node during and right after property-based hostile traffic on each service.

The hostile traffic comes from other addresses of the client namespace (ABUSERS) over real
sockets: fuzzed DHCP frames (random bytes and BOOTP messages with random options, MACs and
relay addresses), fuzzed TFTP packets plus every abuser's quota of stalled transfers, fuzzed
raw HTTP requests and schemathesis cases for every documented route while hundreds of slow
clients hold connections. Meanwhile a background thread keeps running the legitimate node's
real clients (busybox udhcpc, curl over TFTP, curl over HTTP) and records every failure; after
each service's abuse one more legitimate round must pass, and serve must still be running
with no traceback in its log.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
import schemathesis
from conftest import LAB_SITE_YAML
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netlab import in_netns
from serve_lab import Served, netns_pair

from provisiond.tftp import packet as tftp_packet

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

SERVER = "10.213.0.1"
NODE_MAC, NODE_IP = "52:54:00:15:00:11", "10.213.0.11"
ABUSERS = [f"10.213.0.{number}" for number in range(200, 204)]
INVENTORY = LAB_SITE_YAML + f"""\
nodes:
  - {{hostname: node1, mac: '{NODE_MAC}', role: compute, ip: {NODE_IP},
      disk: {{device: vda, size: 40GiB}}}}
"""
CONFIG = '[os.debian12]\ncmdline = "console=ttyS0,115200n8"\n'
IPXE = ("-x", "0x5d:0000", "-x", "0x4d:69505845")  # user class "iPXE"
LEGIT_FILE = os.urandom(512 * 60 + 77)
SLOW_CLIENTS = 300
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("abuse")
    (workdir / "tftp").mkdir()
    (workdir / "tftp" / "legit.bin").write_bytes(LEGIT_FILE)
    (workdir / "inventory.yaml").write_text(INVENTORY)
    (workdir / "provisiond.toml").write_text(CONFIG)
    with netns_pair("abu", f"{SERVER}/24", [f"{NODE_IP}/24", *(f"{a}/24" for a in ABUSERS)]) as ns:
        server = Served(ns, workdir, workdir / "inventory.yaml", workdir / "state",
                        workdir / "provisiond.toml", workdir / "tftp", SERVER)
        server.start()
        try:
            assert server.cli("netboot", "node1", "on").returncode == 0
            yield server
        finally:
            if server.process is not None:
                server.stop()


def legit_round(served: Served) -> list[str]:
    """The node's real clients, once each; what went wrong (empty when all were served)."""
    failures = []
    env = served.udhcpc(NODE_MAC, *IPXE)
    if env is None or env.get("ip") != NODE_IP or not env.get("boot_file", "").endswith(".ipxe"):
        failures.append(f"DHCP: {env and {key: env.get(key) for key in ('ip', 'boot_file')}}")
    if served.tftp_get_from(NODE_IP, "legit.bin") != LEGIT_FILE:
        failures.append("TFTP: legit.bin not served whole")
    code, script = served.curl(NODE_IP, f"/boot/{NODE_MAC}.ipxe")
    if code != 200 or not script.startswith("#!ipxe"):
        failures.append(f"HTTP iPXE script: {code}")
    code, preseed = served.curl(NODE_IP, "/preseed/node1")
    if code != 200 or "d-i " not in preseed:
        failures.append(f"HTTP preseed: {code}")
    return failures


@contextlib.contextmanager
def legit_meanwhile(served: Served) -> Iterator[list[list[str]]]:
    """Legitimate rounds in a background thread (started outside any namespace switch) for as
    long as the block runs; yields the list of every round's failures."""
    rounds: list[list[str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            rounds.append(legit_round(served))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield rounds
    finally:
        stop.set()
        thread.join(120)


def assert_served_during_and_after(served: Served, rounds: list[list[str]]) -> None:
    assert rounds, "no legitimate round completed during the abuse"
    assert all(not failures for failures in rounds), rounds
    assert legit_round(served) == []
    assert served.process is not None and served.process.poll() is None, served.log()
    assert "Traceback" not in served.log(), served.log()


def udp_from(served: Served, source: str, port: int = 0) -> socket.socket:
    with in_netns(served.ns.client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, served.ns.client_if.encode())
        sock.bind((source, port))
    return sock


# -- DHCP -------------------------------------------------------------------------------

ADDRESSES = st.sampled_from(["0.0.0.0", "10.213.0.255", "255.255.255.255", SERVER, NODE_IP,
                             "10.99.0.1"]) | st.ip_addresses(v=4).map(str)
OPTIONS = st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=40)), max_size=8)
BOOTP = st.builds(
    lambda op, hops, xid, flags, ciaddr, giaddr, chaddr, kind, options, sname, file: (
        struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, 6, hops, xid, 0, flags,
                    IPv4Address(ciaddr).packed, bytes(4), bytes(4), IPv4Address(giaddr).packed,
                    chaddr, sname, file)
        + b"\x63\x82\x53\x63" + bytes([53, 1, kind])
        + b"".join(bytes([code, len(value)]) + value for code, value in options) + b"\xff"),
    st.sampled_from([1, 2, 7]), st.integers(0, 255), st.integers(0, 2**32 - 1),
    st.sampled_from([0, 0x8000, 0xFFFF]), ADDRESSES, ADDRESSES, st.binary(min_size=16, max_size=16),
    st.integers(0, 20), OPTIONS, st.binary(max_size=64), st.binary(max_size=128))


def test_dhcp_fuzz_against_live_serve_keeps_serving_the_node(served: Served) -> None:
    sockets = [udp_from(served, source, 68) for source in ABUSERS]
    try:
        with legit_meanwhile(served) as rounds:

            @FUZZ
            @given(st.binary(max_size=700) | BOOTP, st.integers(0, len(ABUSERS) - 1),
                   st.booleans())
            def send(frame: bytes, sender: int, broadcast: bool) -> None:
                with contextlib.suppress(OSError):  # a frame too big for one datagram
                    sockets[sender].sendto(frame, ("255.255.255.255" if broadcast else SERVER, 67))

            for _ in range(3):
                send()
        assert_served_during_and_after(served, rounds)
    finally:
        for sock in sockets:
            sock.close()


# -- TFTP -------------------------------------------------------------------------------

TFTP_NAMES = st.sampled_from(["legit.bin", "../../etc/passwd", "/etc/shadow", "", "a" * 600,
                              "legit.bin\x00x"]) | st.text(max_size=40)
TFTP_OPTIONS = st.dictionaries(
    st.sampled_from(["blksize", "timeout", "tsize", "windowsize"]) | st.text(max_size=8),
    st.sampled_from(["255", "65464", "0", "-1", "\u00b2", "99999999999"]) | st.text(max_size=8),
    max_size=5)


def tftp_request(opcode: int, name: str, mode: str, options: dict[str, str]) -> bytes:
    fields = [name, mode, *(item for pair in options.items() for item in pair)]
    return struct.pack("!H", opcode) + b"".join(
        text.encode("utf-8", "surrogatepass") + b"\x00" for text in fields)


TFTP_FRAMES = st.binary(max_size=600) | st.builds(
    tftp_request, st.integers(0, 7), TFTP_NAMES,
    st.sampled_from(["octet", "netascii", "mail", "OCTET", ""]) | st.text(max_size=8), TFTP_OPTIONS)


def test_tftp_fuzz_and_stalled_transfers_keep_serving_the_node(served: Served) -> None:
    """Every abuser holds its whole quota of stalled transfers (asking for the longest
    timeout and never acknowledging) while sending fuzzed packets."""
    sockets = [udp_from(served, source) for source in ABUSERS]
    stalled = [udp_from(served, source) for source in ABUSERS for _ in range(10)]
    try:
        for sock in stalled:
            sock.sendto(tftp_packet.build_request(tftp_packet.Opcode.RRQ, "legit.bin", "netascii",
                                                  {"timeout": "255", "blksize": "65464"}),
                        (SERVER, 69))
        with legit_meanwhile(served) as rounds:

            @FUZZ
            @given(TFTP_FRAMES, st.integers(0, len(ABUSERS) - 1))
            def send(frame: bytes, sender: int) -> None:
                with contextlib.suppress(OSError):
                    sockets[sender].sendto(frame, (SERVER, 69))

            for _ in range(3):
                send()
        assert_served_during_and_after(served, rounds)
    finally:
        for sock in sockets + stalled:
            sock.close()


# -- HTTP -------------------------------------------------------------------------------

HTTP_REQUESTS = st.builds(
    lambda method, path, query, headers, body: (
        f"{method} {path}{query} HTTP/1.1\r\nHost: x\r\n".encode("utf-8", "surrogatepass")
        + headers + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body),
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "BREW", ""]),
    st.sampled_from(["/boot/", f"/boot/{NODE_MAC}.ipxe", "/preseed/node1", "/kickstart/node1",
                     "/api/v1/nodes/node1/events", "/api/v1/events", "/ui/", "/../../etc/passwd",
                     "*"]) | st.text(max_size=30).map(lambda text: "/" + text),
    st.sampled_from(["", "?since=\u00b2", "?limit=-1", "?since=99999999999999999999"])
    | st.text(max_size=20).map(lambda text: "?" + text),
    st.binary(max_size=120),
    st.sampled_from([b"", b"[" * 5000 + b"]" * 5000, b'{"event": "install-finished"}'])
    | st.binary(max_size=300))


def http_exchange(served: Served, request: bytes) -> bytes:
    """Send one raw request from an abuser address; the first bytes of the reply."""
    with in_netns(served.ns.client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(15)
        sock.bind((ABUSERS[0], 0))
        sock.connect((SERVER, served.http_port))
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            return sock.recv(64)
    return b""


def open_slow_clients(served: Served, count: int) -> list[socket.socket]:
    """Connections that have sent a request line and one header, and never finish."""
    held = []
    for number in range(count):
        with in_netns(served.ns.client_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.bind((ABUSERS[1 + number % (len(ABUSERS) - 1)], 0))
        sock.connect((SERVER, served.http_port))
        sock.sendall(f"GET /boot/{NODE_MAC}.ipxe HTTP/1.1\r\nX-Slow-{number}: a\r\n".encode())
        held.append(sock)
    return held


def test_http_fuzz_and_slow_clients_keep_serving_the_node(served: Served) -> None:
    held = open_slow_clients(served, SLOW_CLIENTS)
    try:
        with legit_meanwhile(served) as rounds:

            @FUZZ
            @given(HTTP_REQUESTS)
            def send(request: bytes) -> None:
                status_line = http_exchange(served, request)
                assert not status_line.startswith((b"HTTP/1.1 5", b"HTTP/1.0 5")), status_line

            send()
            with in_netns(served.ns.client_ns):
                schema = schemathesis.openapi.from_url(f"{served.url}/api/openapi.json")
            for operation in [result.ok() for result in schema.get_all_operations()]:

                @given(case=operation.as_strategy())
                @settings(max_examples=4, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                def call(case: schemathesis.Case) -> None:
                    with in_netns(served.ns.client_ns):
                        reply = case.call(base_url=served.url, timeout=15)
                    assert reply.status_code < 500, (case.path, reply.status_code, reply.text)

                call()
        assert_served_during_and_after(served, rounds)
        # The slow clients were held, not dropped to make room.
        for sock in held:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                assert sock.recv(1) != b"", "a slow client was dropped"
    finally:
        for sock in held:
            sock.close()
