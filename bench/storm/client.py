#!/usr/bin/env python3
"""The storm's nodes: N simulated machines walking the whole network boot chain at once.

Runs inside a client network namespace (started by storm.py, one process per namespace). Each
node, in one asyncio loop:

1. firmware PXE DHCP: DISCOVER/OFFER/REQUEST/ACK from its own MAC, option 93 (0 BIOS, 7
   UEFI), vendor class "PXEClient:Arch:0000x:UNDI:002001", option 97 (UUID), broadcast flag;
   retransmits after 4, 8, 16, 32 s (PXE spec 2.1), then gives up as firmware does (PXE-E51);
2. TFTP of the loader the ACK names: a tsize probe (RRQ tsize=0, the OACK, ERROR 0), then the
   transfer; BIOS ROMs ask blksize 1456, UEFI (EDK2) blksize 1468 and windowsize 4; on
   silence the last packet is sent again after 4 s, 6 times (EDK2's PXE TFTP defaults);
3. iPXE's DHCP: the same exchange with user class "iPXE", retransmits after 1, 2, 4, 8 s;
4. HTTP: the iPXE script the ACK names (following `chain`), then its kernel and initrd,
   whole, as iPXE does; then the answer file from the kernel command line's `url=`
   (the installer), then the installer's callbacks install-started and install-finished
   with the token the answer file carries. A failed HTTP request is tried again after 5 s,
   6 times in all (the installer's callback loop does exactly that).

Every node writes one JSON line: per phase its start, end, retries, bytes and error.
The process polls provisiond's node API (when given) to see when each node is `installing`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import random
import re
import resource
import socket
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from provisiond.dhcp import packet as dhcp
from provisiond.dhcp.options import MessageType, Opt

PXE_DHCP_TIMEOUTS = (4, 8, 16, 32)  # PXE spec 2.1: DHCPDISCOVER retransmissions
IPXE_DHCP_TIMEOUTS = (1, 2, 4, 8)  # iPXE: DHCP_DISC_START_TIMEOUT_SEC doubling
TFTP_TIMEOUT, TFTP_RETRIES = 4.0, 6  # EDK2 PxeBc: PXEBC_MTFTP_TIMEOUT, PXEBC_MTFTP_RETRIES
HTTP_TRIES, HTTP_PAUSE, HTTP_IDLE = 6, 5.0, 60.0
BIOS_BLKSIZE, UEFI_BLKSIZE, UEFI_WINDOW = 1456, 1468, 4
RECV_BUFFER = 1 << 20


@dataclass
class Phase:
    start: float = 0.0
    end: float = 0.0
    retries: int = 0
    bytes: int = 0
    error: str = ""
    retried: list[str] = field(default_factory=list)  # why each retry was needed


@dataclass
class Node:
    index: int
    mac: bytes
    ip: str
    host: str
    uefi: bool
    delay: float = 0.0  # its wave's offset from the storm's start
    phases: dict[str, Phase] = field(default_factory=dict)
    failed: str = ""

    def phase(self, name: str) -> Phase:
        found = self.phases[name] = Phase(start=time.monotonic())
        return found


class Failed(Exception):
    """The node gave up in this phase (as its firmware or installer would)."""


# -- DHCP -------------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ethernet_frame(src_mac: bytes, payload: bytes) -> bytes:
    """A broadcast UDP 68 -> 67 frame from 0.0.0.0, as a client without an address sends."""
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes(4), b"\xff" * 4)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return b"\xff" * 6 + src_mac + b"\x08\x00" + header + udp


# Classic BPF: IPv4, UDP, not a fragment, destination port 68 (what `tcpdump -dd` would give).
DHCP_REPLIES_ONLY = [
    (0x28, 0, 0, 12), (0x15, 0, 8, 0x0800), (0x30, 0, 0, 23), (0x15, 0, 6, 17),
    (0x28, 0, 0, 20), (0x45, 4, 0, 0x1FFF), (0xB1, 0, 0, 14), (0x48, 0, 0, 16),
    (0x15, 0, 1, 68), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0),
]
SO_ATTACH_FILTER = 26


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class DhcpClients:
    """One AF_PACKET socket for every node: frames leave with the node's MAC, and replies are
    read whatever their destination MAC (Kea sends them to the client's chaddr, so the
    interface is promiscuous); a kernel filter passes only UDP to port 68."""

    def __init__(self, interface: str) -> None:
        self.raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        attach_filter(self.raw, DHCP_REPLIES_ONLY)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.raw.bind((interface, 0x0800))
        self.raw.setblocking(False)
        while True:  # drop what arrived before the filter was attached
            try:
                self.raw.recv(65536)
            except BlockingIOError:
                break
        self.waiting: dict[int, asyncio.Queue[dhcp.DhcpPacket]] = {}
        asyncio.get_running_loop().add_reader(self.raw.fileno(), self.readable)

    def readable(self) -> None:
        for _ in range(256):
            try:
                frame = self.raw.recv(65536)
            except BlockingIOError:
                return
            if len(frame) < 42 or frame[23] != 17:
                continue
            start = 14 + (frame[14] & 0x0F) * 4 + 8
            try:
                reply = dhcp.parse(frame[start:])
            except dhcp.MalformedPacket:
                continue
            if reply.op != dhcp.BOOTREPLY:
                continue
            queue = self.waiting.get(reply.xid)
            if queue is not None:
                queue.put_nowait(reply)

    def send(self, node: Node, request: dhcp.DhcpPacket) -> None:
        # A full queue drops the frame, as a NIC would; the retransmission covers it.
        with contextlib.suppress(BlockingIOError):
            self.raw.send(ethernet_frame(node.mac, dhcp.build(request)))

    async def exchange(self, node: Node, ipxe: bool) -> dhcp.DhcpPacket:
        timeouts = IPXE_DHCP_TIMEOUTS if ipxe else PXE_DHCP_TIMEOUTS
        phase = node.phases["dhcp-ipxe" if ipxe else "dhcp-pxe"]
        xid = random.getrandbits(32)
        queue: asyncio.Queue[dhcp.DhcpPacket] = asyncio.Queue()
        self.waiting[xid] = queue
        started = time.monotonic()
        try:
            offer = await self._ask(node, self._request(node, xid, ipxe, MessageType.DISCOVER,
                                                         started), MessageType.OFFER, queue,
                                    timeouts, phase)
            request = self._request(node, xid, ipxe, MessageType.REQUEST, started)
            request.options[Opt.REQUESTED_IP] = offer.yiaddr.packed
            request.options[Opt.SERVER_ID] = offer.options[Opt.SERVER_ID]
            ack = await self._ask(node, request, MessageType.ACK, queue, timeouts, phase)
        finally:
            del self.waiting[xid]
        if str(ack.yiaddr) != node.ip:
            raise Failed(f"ACK gave {ack.yiaddr}, the inventory says {node.ip}")
        return ack

    async def _ask(self, node: Node, request: dhcp.DhcpPacket, want: MessageType,
                   queue: asyncio.Queue[dhcp.DhcpPacket], timeouts: tuple[int, ...],
                   phase: Phase) -> dhcp.DhcpPacket:
        for attempt, timeout in enumerate(timeouts):
            if attempt:
                phase.retries += 1
            self.send(node, request)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                try:
                    reply = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if reply.options.get(Opt.MESSAGE_TYPE) == bytes([MessageType.NAK]):
                    raise Failed("NAK")
                if reply.options.get(Opt.MESSAGE_TYPE) == bytes([want]):
                    return reply
        raise Failed(f"no {want.name} after {len(timeouts)} tries")

    @staticmethod
    def _request(node: Node, xid: int, ipxe: bool, mtype: MessageType,
                 started: float) -> dhcp.DhcpPacket:
        arch = 7 if node.uefi else 0
        options = {
            Opt.MESSAGE_TYPE: bytes([mtype]),
            Opt.MAX_MESSAGE_SIZE: struct.pack("!H", 1472),
            Opt.PARAMETER_LIST: bytes([1, 3, 6, 12, 15, 17, 43, 60, 66, 67, 128, 175]),
            Opt.VENDOR_CLASS: f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode(),
            Opt.CLIENT_ARCH: struct.pack("!H", arch),
            Opt.CLIENT_NDI: bytes([1, 2, 1]),
            Opt.CLIENT_UUID: b"\0" + uuid.UUID(int=node.index + 1).bytes,
        }
        if ipxe:
            options[Opt.USER_CLASS] = b"iPXE"  # as iPXE sends it (not RFC 3004 framed)
        secs = min(int(time.monotonic() - started), 0xFFFF)
        return dhcp.DhcpPacket(op=dhcp.BOOTREQUEST, xid=xid, chaddr=node.mac, secs=secs,
                               flags=dhcp.FLAG_BROADCAST, options=options)


# -- TFTP -------------------------------------------------------------------------------------


class TftpTransfer(asyncio.DatagramProtocol):
    """One RRQ: the OACK is acknowledged, DATA acknowledged per block or per window."""

    def __init__(self, blksize: int, window: int) -> None:
        self.blksize, self.window = blksize, window
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None
        self.expected, self.received, self.tsize = 1, 0, -1
        self.last = b""  # the packet sent last, sent again on silence
        self.heard = asyncio.Event()
        self.probe = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = data
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done() or len(data) < 4:
            return
        if self.peer is None:
            self.peer = addr
        elif addr != self.peer:
            return
        self.heard.set()
        opcode, = struct.unpack_from("!H", data)
        if opcode == 6:  # OACK
            fields = data[2:].split(b"\0")
            values = dict(zip(fields[0::2], fields[1::2], strict=False))
            self.blksize = int(values.get(b"blksize", b"512"))
            self.window = int(values.get(b"windowsize", b"1"))
            self.tsize = int(values.get(b"tsize", b"-1"))
            if self.probe:
                self.send(struct.pack("!HH", 5, 0) + b"size probe\0", addr)
                self.done.set_result(self.tsize)
                return
            self.send(struct.pack("!HH", 4, 0), addr)
        elif opcode == 3:  # DATA
            block, = struct.unpack_from("!H", data, 2)
            payload = len(data) - 4
            if block != self.expected & 0xFFFF:
                # out of order or a duplicate: ask again from the last block in order
                self.send(struct.pack("!HH", 4, (self.expected - 1) & 0xFFFF), addr)
                return
            self.received += payload
            self.expected += 1
            last = payload < self.blksize
            if last or (self.expected - 1) % self.window == 0:
                self.send(struct.pack("!HH", 4, block), addr)
            if last:
                if 0 <= self.tsize != self.received:
                    self.done.set_exception(Failed(
                        f"TFTP: got {self.received} bytes, tsize said {self.tsize}"))
                else:
                    self.done.set_result(self.received)
        elif opcode == 5:
            message = data[4:].split(b"\0")[0].decode(errors="replace")
            self.done.set_exception(Failed(f"TFTP error {data[2:4].hex()}: {message}"))


async def tftp_get(node: Node, server: str, name: str, probe: bool, phase: Phase) -> int:
    blksize = UEFI_BLKSIZE if node.uefi else BIOS_BLKSIZE
    window = UEFI_WINDOW if node.uefi else 1
    options = {"tsize": "0"} if probe else {"blksize": str(blksize), "tsize": "0"}
    if node.uefi and not probe:
        options["windowsize"] = str(window)
    rrq = struct.pack("!H", 1) + name.encode() + b"\0octet\0" + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
    loop = asyncio.get_running_loop()
    transport, transfer = await loop.create_datagram_endpoint(
        lambda: TftpTransfer(blksize if not probe else 512, window if not probe else 1),
        local_addr=(node.ip, 0))
    transfer.probe = probe
    try:
        transfer.send(rrq, (server, 69))
        silent = 0
        while not transfer.done.done():
            transfer.heard.clear()
            waiter = asyncio.ensure_future(transfer.heard.wait())
            await asyncio.wait({waiter, transfer.done}, timeout=TFTP_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if transfer.done.done():
                break
            if transfer.heard.is_set():
                silent = 0
                continue
            silent += 1
            if silent > TFTP_RETRIES:
                raise Failed(f"TFTP {name}: no answer after {TFTP_RETRIES} retries")
            phase.retries += 1
            transfer.send(transfer.last, transfer.peer or (server, 69))
        return transfer.done.result()
    finally:
        transport.close()


# -- HTTP -------------------------------------------------------------------------------------


class HttpResponse(asyncio.BufferedProtocol):
    """Reads one HTTP/1.1 response into a reused buffer, keeping only the headers (and the
    body when asked): the kernel and initrd are counted, not stored."""

    def __init__(self, keep_body: bool) -> None:
        self.buffer = bytearray(RECV_BUFFER)
        self.head = b""
        self.body = bytearray()
        self.keep_body = keep_body
        self.status = 0
        self.length: int | None = None
        self.got = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.progress = time.monotonic()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.progress = time.monotonic()
        chunk = self.buffer[:nbytes] if (self.length is None or self.keep_body) else None
        if self.length is None:
            self.head += bytes(chunk)  # type: ignore[arg-type]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            rest = self.head[end + 4:]
            self.head = self.head[:end]
            lines = self.head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            self.length = int(headers.get("content-length", "0"))
            self.got = len(rest)
            if self.keep_body:
                self.body += rest
        else:
            self.got += nbytes
            if self.keep_body:
                self.body += chunk  # type: ignore[arg-type]
        if self.got >= self.length and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(Failed(f"connection closed after {self.got} body bytes"))


async def http_once(node: Node, method: str, url: str, headers: dict[str, str],
                    body: bytes, keep_body: bool) -> HttpResponse:
    found = re.fullmatch(r"http://([^/:]+)(?::(\d+))?(/.*)", url)
    if not found:
        raise Failed(f"not an http URL: {url}")
    host, port, path = found.group(1), int(found.group(2) or 80), found.group(3)
    loop = asyncio.get_running_loop()
    transport, response = await asyncio.wait_for(loop.create_connection(
        lambda: HttpResponse(keep_body), host, port, local_addr=(node.ip, 0)), HTTP_IDLE)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: iPXE/1.21.1",
                 "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        transport.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        while not response.done.done():
            await asyncio.wait({response.done}, timeout=5)
            if time.monotonic() - response.progress > HTTP_IDLE:
                raise Failed(f"HTTP {url}: nothing for {HTTP_IDLE:.0f} s")
        response.done.result()
    finally:
        transport.close()
    if response.status >= 400:
        raise Failed(f"HTTP {response.status} for {path}")
    return response


async def http(node: Node, phase_name: str, method: str, url: str, keep_body: bool = True,
               headers: dict[str, str] | None = None, body: bytes = b"") -> HttpResponse:
    phase = node.phase(phase_name)
    for attempt in range(HTTP_TRIES):
        try:
            response = await http_once(node, method, url, headers or {}, body, keep_body)
            phase.bytes += response.got
            phase.end = time.monotonic()
            return response
        except (OSError, TimeoutError, Failed) as exc:
            if attempt == HTTP_TRIES - 1:
                raise Failed(f"{phase_name}: {exc}") from None
            phase.retries += 1
            phase.retried.append(f"{time.monotonic():.1f}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(HTTP_PAUSE)
    raise AssertionError("unreachable")


# -- one node ---------------------------------------------------------------------------------


def boot_file(ack: dhcp.DhcpPacket) -> str:
    """Option 67 if the server sent it, else the BOOTP file field (as iPXE reads it)."""
    return (ack.options.get(Opt.BOOTFILE) or ack.file).rstrip(b"\0").decode()


async def boot(node: Node, dhcp_clients: DhcpClients, start_at: float) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    node.phase("dhcp-pxe")
    ack = await dhcp_clients.exchange(node, ipxe=False)
    node.phases["dhcp-pxe"].end = time.monotonic()
    loader = boot_file(ack)
    server = str(ack.siaddr if ack.siaddr != IPv4Address(0) else ack.server_id)
    if not loader:
        raise Failed("the PXE ACK names no boot file")
    phase = node.phase("tftp")
    await tftp_get(node, server, loader, True, phase)
    phase.bytes = await tftp_get(node, server, loader, False, phase)
    phase.end = time.monotonic()
    node.phase("dhcp-ipxe")
    ack = await dhcp_clients.exchange(node, ipxe=True)
    node.phases["dhcp-ipxe"].end = time.monotonic()
    url = boot_file(ack)
    mac_text = node.mac.hex(":")
    script = ""
    for _ in range(3):  # a script may `chain` to the node's own
        url = url.replace("${net0/mac}", mac_text).replace("${mac}", mac_text)
        text = (await http(node, "script", "GET", url)).body.decode()
        chain = re.search(r"^chain\s+(?:--\S+\s+)*(\S+)", text, re.MULTILINE)
        if not chain:
            script = text
            break
        url = chain.group(1)
    kernel = re.search(r"^kernel\s+(\S+)(.*)$", script, re.MULTILINE)
    initrd = re.search(r"^initrd\s+(\S+)", script, re.MULTILINE)
    if not kernel or not initrd:
        raise Failed(f"the iPXE script has no kernel/initrd: {script[:200]!r}")
    await http(node, "kernel", "GET", kernel.group(1), keep_body=False)
    await http(node, "initrd", "GET", initrd.group(1), keep_body=False)
    answer_url = re.search(r"\b(?:url|inst\.ks)=(\S+)", kernel.group(2))
    if not answer_url:
        raise Failed("the kernel command line names no answer file")
    answer = (await http(node, "answer", "GET", answer_url.group(1))).body.decode()
    token = re.search(r"Authorization: Bearer ([^'\"\s]+)", answer)
    events = re.search(r"(http://\S+/api/v1/nodes/[^/\s'\"]+/events)", answer)
    if not events:
        raise Failed("the answer file carries no callback URL")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token.group(1)}"
    for event in ("install-started", "install-finished"):
        await http(node, event, "POST", events.group(1), headers=headers,
                   body=json.dumps({"event": event}).encode())


async def run_node(node: Node, dhcp_clients: DhcpClients, start_at: float,
                   deadline: float) -> None:
    try:
        await asyncio.wait_for(boot(node, dhcp_clients, start_at), deadline - time.monotonic())
    except Failed as exc:
        node.failed = str(exc)
    except TimeoutError:
        node.failed = "the storm's time limit ran out"
    except OSError as exc:
        node.failed = f"{type(exc).__name__}: {exc}"
    for phase in node.phases.values():
        if not phase.end and not phase.error:
            phase.error = node.failed or "unfinished"


async def poll_states(api: str, source_ip: str, hosts: set[str], deadline: float,
                      seen: dict[str, float], stop: asyncio.Event) -> None:
    """When each node is first `installing` (or later) in provisiond's own API."""
    later = {"installing", "installed", "configuring", "ready"}
    probe = Node(-1, b"", source_ip, "", False)
    while time.monotonic() < deadline and not (stop.is_set() and seen.keys() >= hosts):
        try:
            response = await http_once(probe, "GET", f"{api}/api/v1/nodes", {}, b"", True)
            now = time.monotonic()
            listing = json.loads(response.body)
            for item in listing.get("nodes", listing) if isinstance(listing, dict) else listing:
                if item.get("state") in later and item["hostname"] in hosts:
                    seen.setdefault(item["hostname"], now)
        except (OSError, TimeoutError, Failed, ValueError):
            pass
        if seen.keys() >= hosts:
            return
        await asyncio.sleep(1.0)  # as `provisiond watch` would; more often loads the server


async def main_async(args: argparse.Namespace) -> None:
    plan = json.loads(Path(args.plan).read_text())
    nodes = [Node(n["index"], bytes.fromhex(n["mac"].replace(":", "")), n["ip"], n["host"],
                  n["uefi"], n.get("delay", 0.0)) for n in plan["nodes"]]
    dhcp_clients = DhcpClients(plan["interface"])
    start, deadline = plan["start"], plan["deadline"]
    rng = random.Random(plan.get("seed", 0))
    seen: dict[str, float] = {}
    stop = asyncio.Event()
    poller = None
    if plan.get("api"):
        poller = asyncio.create_task(poll_states(plan["api"], plan["poll_ip"],
                                                 set(plan["all_hosts"]), deadline, seen, stop))
    await asyncio.gather(*(run_node(node, dhcp_clients,
                                    start + node.delay + rng.uniform(0, plan["jitter"]),
                                    deadline) for node in nodes))
    stop.set()
    if poller is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poller, max(1.0, min(30.0, deadline - time.monotonic())))
    with open(args.out, "w") as out:
        for node in nodes:
            out.write(json.dumps({"host": node.host, "uefi": node.uefi, "failed": node.failed,
                                  "phases": {k: vars(v) for k, v in node.phases.items()}}) + "\n")
        out.write(json.dumps({"installing_seen": seen}) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", help="JSON written by storm.py")
    parser.add_argument("out", help="where to write the results (JSON lines)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
