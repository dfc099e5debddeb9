"""The DHCP server against real clients (ISC dhclient, busybox udhcpc) in network namespaces."""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from dhcp_lab import Lab, in_netns, udhcpc, udp_socket, veth_lab
from dhcp_lab import dhclient as run_dhclient

from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREQUEST, DhcpPacket, MalformedPacket, build, parse
from provisiond.dhcp.server import DhcpServer, Pool
from provisiond.errors import UserError
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Source, State
from provisiond.store import Store

pytestmark = pytest.mark.root

INVENTORY = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.0.0/24
  gateway: 10.213.0.254
  dns: [10.213.0.53, 10.213.0.54]
  server: 10.213.0.1
nodes:
  - {hostname: node1, mac: "52:54:00:d1:00:01", role: controller, ip: 10.213.0.11}
  - {hostname: node2, mac: "52:54:00:d1:00:02", role: compute, ip: 10.213.0.12}
  - {hostname: node3, mac: "52:54:00:d1:00:03", role: compute, ip: 10.213.0.13}
"""
NODE1, NODE2, NODE3 = "52:54:00:d1:00:01", "52:54:00:d1:00:02", "52:54:00:d1:00:03"
UNKNOWN = "52:54:00:d1:00:99"


@dataclass
class Running:
    lab: Lab
    store: Store
    server: DhcpServer
    inventory_path: Path


def start_server(
    lab: Lab, inventory_path: Path, store: Store, interface: str | None = None, **kw: object,
) -> DhcpServer:
    inventory = load_inventory(inventory_path)
    store.sync_nodes({n.hostname: n.mac for n in inventory.nodes})
    server = DhcpServer(inventory, store, interface or lab.server_if, **kw)  # type: ignore[arg-type]
    with in_netns(lab.server_ns):
        server.start()
    return server


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("dhcp")
    inventory_path = tmp / "inventory.yaml"
    inventory_path.write_text(INVENTORY)
    store = Store.in_state_dir(tmp / "state")
    with veth_lab("n", ("10.213.0.1/24",)) as lab:
        state = Running(lab, store, start_server(lab, inventory_path, store), inventory_path)
        try:
            yield state
        finally:
            state.server.stop()


def test_dhclient_gets_its_reservation(running: Running, tmp_path: Path) -> None:
    running.lab.set_client_mac(NODE1)
    env = run_dhclient(running.lab, tmp_path)
    assert env is not None, (tmp_path / "dhclient.log").read_text()
    assert env["new_ip_address"] == "10.213.0.11"
    assert env["new_subnet_mask"] == "255.255.255.0"
    assert env["new_routers"] == "10.213.0.254"
    assert env["new_domain_name_servers"] == "10.213.0.53 10.213.0.54"
    assert env["new_host_name"] == "node1"
    assert env["new_domain_name"] == "lab.example"
    assert env["new_dhcp_server_identifier"] == "10.213.0.1"
    assert "new_filename" not in env  # an OS's DHCP client is not a boot client
    lease = running.store.lease_for(NODE1)
    assert lease is not None and lease.ip == "10.213.0.11" and lease.hostname == "node1"


def test_udhcpc_gets_its_reservation(running: Running, tmp_path: Path) -> None:
    running.lab.set_client_mac(NODE2)
    env = udhcpc(running.lab, tmp_path)
    assert env is not None
    assert env["ip"] == "10.213.0.12"
    assert env["subnet"] == "255.255.255.0"
    assert env["router"] == "10.213.0.254"
    assert env["dns"].split() == ["10.213.0.53", "10.213.0.54"]
    assert env["hostname"] == "node2"
    assert env["domain"] == "lab.example"
    assert env["serverid"] == "10.213.0.1"
    lease = running.store.lease_for(NODE2)
    assert lease is not None and lease.ip == "10.213.0.12"


def test_unknown_mac_gets_no_answer_and_is_recorded(running: Running, tmp_path: Path) -> None:
    running.lab.set_client_mac(UNKNOWN)
    assert udhcpc(running.lab, tmp_path, "-V", "PXEClient:Arch:00000:UNDI:002001", tries=2) is None
    seen = {entry["mac"]: entry for entry in running.store.seen_macs()}
    assert UNKNOWN in seen
    assert seen[UNKNOWN]["detail"]["vendor_class"].startswith("PXEClient")
    assert running.store.lease_for(UNKNOWN) is None


@pytest.mark.parametrize(
    ("client", "options", "expected"),
    [
        ("udhcpc", ("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"), "undionly.kpxe"),
        ("dhclient", 'option arch code 93 = unsigned integer 16;\nsend arch 7;\n', "ipxe.efi"),
        ("udhcpc", ("-x", "0x5d:0007", "-x", "0x4d:69505845"),  # user class "iPXE"
         f"http://10.213.0.1:8080/boot/{NODE3}.ipxe"),
    ],
    ids=["bios-udhcpc", "uefi-dhclient", "ipxe-udhcpc"],
)
def test_boot_file_by_client_architecture(
    running: Running, tmp_path: Path, client: str, options: object, expected: str,
) -> None:
    running.store.set_netboot("node3", True, Source.OPERATOR)
    running.lab.set_client_mac(NODE3)
    if client == "dhclient":
        env = run_dhclient(running.lab, tmp_path, config=str(options))
        assert env is not None
        assert env["new_filename"] == expected and env["new_ip_address"] == "10.213.0.13"
    else:
        env = udhcpc(running.lab, tmp_path, *options)  # type: ignore[misc]
        assert env is not None
        assert env["boot_file"] == expected and env["siaddr"] == "10.213.0.1"
    assert running.store.node("node3").state is State.PXE


def test_netboot_off_gets_no_boot_file(running: Running, tmp_path: Path) -> None:
    running.lab.set_client_mac(NODE2)
    env = udhcpc(running.lab, tmp_path, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
    assert env is not None and env["ip"] == "10.213.0.12"
    assert "boot_file" not in env
    assert running.store.node("node2").state is State.NEW


def _discover(mac: str, **fields: object) -> DhcpPacket:
    packet = DhcpPacket(op=BOOTREQUEST, xid=random.getrandbits(32), chaddr=bytes.fromhex(mac.replace(":", "")),
                        options={Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER])})
    for name, value in fields.items():
        setattr(packet, name, value)
    return packet


def _receive(sock: socket.socket, xid: int, timeout: float = 3.0) -> DhcpPacket:
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data, _ = sock.recvfrom(4096)
        packet = parse(data)
        if packet.xid == xid:
            return packet
    raise AssertionError("no reply")


def test_relayed_request_is_answered_to_the_relay(running: Running) -> None:
    lab = running.lab
    lab.client_address("10.213.0.200/24")
    try:
        relay = udp_socket(lab.client_ns, lab.client_if, "10.213.0.200", 67)
        with relay:
            request = _discover(NODE1, giaddr=IPv4Address("10.213.0.200"), hops=1)
            request.options[Opt.RELAY_AGENT] = b"\x01\x06port-7"
            relay.sendto(build(request), ("10.213.0.1", 67))
            reply = _receive(relay, request.xid)
    finally:
        lab.client_address("10.213.0.200/24", add=False)
    assert reply.message_type is MessageType.OFFER
    assert reply.yiaddr == IPv4Address("10.213.0.11") and reply.giaddr == IPv4Address("10.213.0.200")
    assert reply.options[Opt.RELAY_AGENT] == b"\x01\x06port-7"


def _garbage(rng: random.Random, valid: bytes) -> bytes:
    """A corrupted DHCP message: truncated, bad lengths, wrong cookie or plain noise."""
    kind = rng.randrange(4)
    if kind == 0:
        return valid[: rng.randrange(len(valid))]
    if kind == 1:
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:
        return valid[:236] + rng.randbytes(4) + valid[240:]
    return rng.randbytes(rng.randrange(1, 700))


def test_garbage_is_counted_and_dropped_and_server_keeps_serving(
    running: Running, tmp_path: Path,
) -> None:
    lab, server = running.lab, running.server
    rng = random.Random(2131)
    valid = build(_discover(UNKNOWN, giaddr=IPv4Address("10.213.0.201")))
    packets = [_garbage(rng, valid) for _ in range(3000)]
    malformed = 0
    for data in packets:
        try:
            parse(data)
        except MalformedPacket:
            malformed += 1
    before = server.stats.copy()
    lab.client_address("10.213.0.201/24")
    try:
        with udp_socket(lab.client_ns, lab.client_if, "10.213.0.201", 0) as sock:
            for number, data in enumerate(packets, start=1):
                sock.sendto(data, ("10.213.0.1", 67))
                # Stay well inside the server's socket buffer (kernel drops would blur the
                # count): let it catch up to within 300 packets, however slow the machine.
                deadline = time.monotonic() + 10
                while (number - (server.stats["received"] - before["received"]) > 300
                       and time.monotonic() < deadline):
                    time.sleep(0.005)
    finally:
        lab.client_address("10.213.0.201/24", add=False)
    deadline = time.monotonic() + 20
    while server.stats["received"] - before["received"] < len(packets) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.stats["received"] - before["received"] == len(packets)
    assert server.stats["malformed"] - before["malformed"] == malformed > 2000
    assert server.stats["errors"] == before["errors"]
    # ...and a real client is still served.
    lab.set_client_mac(NODE1)
    env = udhcpc(lab, tmp_path)
    assert env is not None and env["ip"] == "10.213.0.11"


def test_restart_keeps_leases_and_releases_removed_nodes(running: Running, tmp_path: Path) -> None:
    store, lab = running.store, running.lab
    store.save_lease(NODE1, "10.213.0.11", "node1", time.time() + 600)
    store.save_lease(NODE2, "10.213.0.12", "node2", time.time() + 600)
    store.save_lease(UNKNOWN, "10.213.0.99", None, time.time() + 600)
    running.server.stop()
    smaller = tmp_path / "inventory.yaml"
    smaller.write_text(INVENTORY.replace(
        '  - {hostname: node2, mac: "52:54:00:d1:00:02", role: compute, ip: 10.213.0.12}\n', ""))
    server = start_server(lab, smaller, Store.in_state_dir(store.path.parent))
    try:
        leases = {lease.mac: lease.ip for lease in store.leases()}
        assert leases[NODE1] == "10.213.0.11"
        assert NODE2 not in leases and UNKNOWN not in leases
    finally:
        server.stop()
        running.server = start_server(lab, running.inventory_path, store)


def test_dynamic_pool_serves_unknown_macs(running: Running, tmp_path: Path) -> None:
    running.server.stop()
    store = running.store
    server = start_server(running.lab, running.inventory_path, store,
                          pool=Pool.parse("10.213.0.100-10.213.0.101"))
    try:
        running.lab.set_client_mac(UNKNOWN)
        env = udhcpc(running.lab, tmp_path)
        assert env is not None and env["ip"] == "10.213.0.100" and "hostname" not in env
        lease = store.lease_for(UNKNOWN)
        assert lease is not None and lease.ip == "10.213.0.100" and lease.hostname is None
        # The client finds the address in use (DECLINE): it leaves the pool for a while.
        decline = _discover(UNKNOWN)
        decline.options = {Opt.MESSAGE_TYPE: bytes([MessageType.DECLINE]),
                           Opt.SERVER_ID: IPv4Address("10.213.0.1").packed,
                           Opt.REQUESTED_IP: IPv4Address("10.213.0.100").packed}
        with udp_socket(running.lab.client_ns, running.lab.client_if, "0.0.0.0", 68) as sock:
            sock.sendto(build(decline), ("255.255.255.255", 67))
        deadline = time.monotonic() + 5
        while store.lease_for(UNKNOWN) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.lease_for(UNKNOWN) is None
        again = udhcpc(running.lab, tmp_path / "again")
        assert again is not None and again["ip"] == "10.213.0.101"
    finally:
        server.stop()
        running.server = start_server(running.lab, running.inventory_path, store)


def test_refuses_interface_off_the_site_network(running: Running, tmp_path: Path) -> None:
    other = tmp_path / "inventory.yaml"
    other.write_text(INVENTORY.replace("10.213.0.", "10.214.0."))
    server = DhcpServer(load_inventory(other), running.store, running.lab.server_if)
    with in_netns(running.lab.server_ns), pytest.raises(UserError) as error:
        server.start()
    message = str(error.value)
    assert "is not on the site network 10.214.0.0/24" in message and "10.213.0.1/24" in message


def test_interface_can_be_named_by_its_address(running: Running, tmp_path: Path) -> None:
    running.server.stop()
    server = start_server(running.lab, running.inventory_path, running.store,
                          interface="10.213.0.1")
    try:
        assert server.interface == running.lab.server_if
        running.lab.set_client_mac(NODE1)
        env = udhcpc(running.lab, tmp_path)
        assert env is not None and env["ip"] == "10.213.0.11"
    finally:
        server.stop()
        running.server = start_server(running.lab, running.inventory_path, running.store)


def test_release_by_a_real_client_removes_the_lease(running: Running, tmp_path: Path) -> None:
    running.lab.set_client_mac(NODE2)
    try:
        env = udhcpc(running.lab, tmp_path, release=True)
        assert env is not None and env["ip"] == "10.213.0.12"
        deadline = time.monotonic() + 5
        while running.store.lease_for(NODE2) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        running.lab.client_address("10.213.0.12/24", add=False)
    assert running.store.lease_for(NODE2) is None
    assert running.server.stats["release"] >= 1


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("10.214.0.100-10.214.0.110", "is not inside the site network 10.213.0.0/24"),
        ("10.213.0.10-10.213.0.20", "contains reserved addresses (10.213.0.11, 10.213.0.12"),
    ],
)
def test_bad_pool_is_refused_at_start(running: Running, pool: str, message: str) -> None:
    inventory = load_inventory(running.inventory_path)
    server = DhcpServer(inventory, running.store, running.lab.server_if, pool=Pool.parse(pool))
    with in_netns(running.lab.server_ns), pytest.raises(UserError, match=re.escape(message)):
        server.start()


def test_a_decline_flood_is_counted_not_reported_a_thousand_times(
        running: Running, tmp_path: Path) -> None:
    """1,000 DECLINEs from a known MAC: counted, one warning and event; the node still gets
    its address right after."""
    before = [e for e in running.store.events(hostname="node3") if e.kind == "dhcp:decline"]
    declines = running.server.stats["declines"]
    with udp_socket(running.lab.client_ns, running.lab.client_if, "0.0.0.0", 68) as sock:
        for _ in range(1000):
            decline = _discover(NODE3)
            decline.options = {Opt.MESSAGE_TYPE: bytes([MessageType.DECLINE]),
                               Opt.SERVER_ID: IPv4Address("10.213.0.1").packed,
                               Opt.REQUESTED_IP: IPv4Address("10.213.0.13").packed}
            sock.sendto(build(decline), ("255.255.255.255", 67))
    deadline = time.monotonic() + 20
    while running.server.stats["declines"] < declines + 1000 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = [e for e in running.store.events(hostname="node3") if e.kind == "dhcp:decline"]
    assert len(after) - len(before) == 1
    assert running.server.stats["declines"] - declines >= 900  # a few may be dropped by the kernel
    running.lab.set_client_mac(NODE3)
    env = udhcpc(running.lab, tmp_path)
    assert env is not None and env["ip"] == "10.213.0.13"
