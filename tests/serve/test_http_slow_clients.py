"""The real HTTP service (as `serve` starts it) keeps serving a node while hundreds of hostile
clients hold connections open by sending their request a few bytes at a time.

Loopback only: the inventory's site network is 127.0.0.0/8, so the node (127.0.0.11) is a
source address of this machine and its own answer file is served to it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from slowloris import slow_clients, still_open

from provisiond.config import load_config
from provisiond.inventory import load_inventory
from provisiond.nodes import open_store, provision
from provisiond.serve import HttpProcess

SLOW_CLIENTS = 400
KERNEL = os.urandom(6 * 2**20 + 123)  # several socket buffers: sendfile(2) resumes many times
IDLE_TIMEOUT = 3  # http_idle_timeout of the idle tests (waitress looks every second then)
NODE_IP = "127.0.0.11"
NODE_MAC = "52:54:00:99:00:01"
INVENTORY = f"""\
site: {{name: slow, domain: slow.example, network: 127.0.0.0/8, gateway: 127.0.0.1,
        server: 127.0.0.1, os: debian12}}
nodes:
  - {{hostname: n1, mac: '{NODE_MAC}', role: compute, ip: {NODE_IP},
      disk: {{device: vda, size: 40GiB}}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def http_child(tmp_path: Path, serve_extra: str = "") -> Iterator[tuple[str, str]]:
    """The HTTP child on a free loopback port, with `serve_extra` lines in [serve]; yields
    (base URL, node n1's callback token)."""
    (tmp_path / "linux").write_bytes(KERNEL)
    (tmp_path / "initrd.gz").write_bytes(b"initrd" * 1000)
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(INVENTORY)
    (tmp_path / "provisiond.toml").write_text(
        f'[serve]\nhttp_port = {free_port()}\n{serve_extra}[os.debian12]\n'
        f'kernel = "{tmp_path}/linux"\ninitrd = "{tmp_path}/initrd.gz"\n')
    config = load_config(tmp_path / "provisiond.toml").with_overrides(
        inventory=inventory_path, state_dir=tmp_path / "state")
    store = open_store(config.state_dir, load_inventory(inventory_path))
    provision(store, "n1")
    token = store.current_token("n1")
    store.close()
    http = HttpProcess(config, [IPv4Address("127.0.0.1")], None, verbosity=0)
    http.start()
    try:
        yield f"http://127.0.0.1:{config.http_port}", token
    finally:
        http.stop()


@pytest.fixture
def http_service(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with http_child(tmp_path) as service:
        yield service


@pytest.fixture
def http_service_idle_3s(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with http_child(tmp_path, f"http_idle_timeout = {IDLE_TIMEOUT}\n") as service:
        yield service


def fetch(url: str, *, source: str = "127.0.0.1", data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request from `source`, bounded by a 10 s socket timeout (a held service fails it)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10,
                                            source_address=(source, 0))
    try:
        connection.request("POST" if data is not None else "GET", parts.path, body=data,
                           headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.mark.timeout(180)
def test_node_is_served_while_hundreds_of_slow_clients_hold_connections(
        http_service: tuple[str, str]) -> None:
    url, token = http_service
    port = int(url.rsplit(":", 1)[1])
    with slow_clients(port, SLOW_CLIENTS, f"/boot/{NODE_MAC}.ipxe") as held:
        status, script = fetch(f"{url}/boot/{NODE_MAC}.ipxe", source=NODE_IP)
        assert status == 200 and script.startswith(b"#!ipxe")
        status, answer = fetch(f"{url}/preseed/n1", source=NODE_IP)
        assert status == 200 and b"d-i " in answer
        status, reply = fetch(f"{url}/api/v1/nodes/n1/events", source=NODE_IP,
                              data=json.dumps({"event": "install-started"}).encode(),
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": "application/json"})
        assert status == 200 and json.loads(reply)["state"] == "installing"
        status, kernel = fetch(f"{url}/boot/debian12/linux", source=NODE_IP)
        assert status == 200 and kernel == KERNEL
        # The slow clients are still connected (held, not dropped to make room).
        assert still_open(held) == SLOW_CLIENTS


@pytest.mark.timeout(180)
def test_boot_assets_whole_ranged_and_to_a_stalled_reader(http_service: tuple[str, str]) -> None:
    """Boot assets leave by sendfile(2) from waitress's loop (provisiond/http/sendfile.py): a
    whole file and a range arrive exactly, and a reader that stops reading mid-kernel holds no
    worker: the node's script and the kernel are served meanwhile, and the stalled reader then
    goes on getting the right bytes."""
    url, _ = http_service
    status, kernel = fetch(f"{url}/boot/debian12/linux", source=NODE_IP)
    assert status == 200 and kernel == KERNEL
    status, part = fetch(f"{url}/boot/debian12/linux", source=NODE_IP,
                         headers={"Range": "bytes=1000-3000099"})
    assert status == 206 and part == KERNEL[1000:3000100]
    port = int(url.rsplit(":", 1)[1])
    stalled = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /boot/debian12/linux HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled.append(sock)
    try:
        first = stalled[0].recv(1000)
        assert first.startswith(b"HTTP/1.1 200")
        for _ in range(2):
            status, kernel = fetch(f"{url}/boot/debian12/linux", source=NODE_IP)
            assert status == 200 and kernel == KERNEL
            status, script = fetch(f"{url}/boot/{NODE_MAC}.ipxe", source=NODE_IP)
            assert status == 200 and script.startswith(b"#!ipxe")
        # Its small window crawls (TCP, not the server): its next 64 KiB are checked.
        body = first.partition(b"\r\n\r\n")[2]
        while len(body) < 65536:
            data = stalled[0].recv(65536)
            assert data, "the stalled reader was cut off"
            body += data
        assert body == KERNEL[:len(body)]
    finally:
        for sock in stalled:
            sock.close()


def kernel_request(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    sock.sendall(b"GET /boot/debian12/linux HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def read_steadily(sock: socket.socket, per_second: int) -> bytes:
    """The whole response, read in quarter-second sips of per_second/4 bytes: a client that
    keeps receiving, slower than the server's socket buffer (megabytes) frees room for a
    write within the idle time."""
    reply = b""
    while True:
        data = sock.recv(per_second // 4)
        if not data:
            return reply
        reply += data
        body = reply.partition(b"\r\n\r\n")[2]
        if len(body) >= len(KERNEL):
            return reply
        time.sleep(0.25)


def server_side_state(port: int, client: socket.socket) -> str:
    """The TCP state of the server's end of `client`'s connection, as `ss` shows it."""
    address, client_port = client.getsockname()
    out = subprocess.run(["ss", "-Htna", "src", f"127.0.0.1:{port}", "dst",
                          f"{address}:{client_port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.split()
    return out[0] if out else "gone"


@pytest.mark.timeout(180)
def test_idle_timeout_cuts_a_client_that_stopped_reading_never_one_that_reads_slowly(
        http_service_idle_3s: tuple[str, str]) -> None:
    """http_idle_timeout (3 s here) closes a connection whose client received nothing for that
    long, not one whose client keeps receiving slowly: such a client waits many idle times
    between two writes of the server (each needs a third of a socket buffer of megabytes
    free), and was cut in the middle of its kernel by the write-only rule (a node's initrd in
    the 1,000-node boot storm, BENCHMARKS.md)."""
    url, _ = http_service_idle_3s
    port = int(url.rsplit(":", 1)[1])
    stopped = kernel_request(port, "127.0.0.12")
    assert stopped.recv(1000).startswith(b"HTTP/1.1 200")  # then never reads again
    slow = kernel_request(port, NODE_IP)
    try:
        reply = read_steadily(slow, per_second=256 * 1024)  # 6 MiB: about 24 s
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert len(body) == len(KERNEL), f"the slow reader was cut after {len(body)} bytes"
        assert body == KERNEL
        # The reader that stopped was cut meanwhile: the server closed its end (bounded wait
        # for the state change, the server looks once a second), and what the socket still
        # held ends before the kernel's end.
        for _ in range(120):
            if server_side_state(port, stopped) != "ESTAB":
                break
            time.sleep(0.5)
        assert server_side_state(port, stopped) != "ESTAB", "the stopped reader is still held"
        got = 0
        while data := stopped.recv(1 << 20):
            got += len(data)
        assert got < len(KERNEL)
    finally:
        slow.close()
        stopped.close()
