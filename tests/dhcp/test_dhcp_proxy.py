"""proxyDHCP beside a real dnsmasq that hands out the addresses, in the same namespace."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import stop_process
from dhcp_lab import PXE_VENDOR, Lab, dhclient, in_netns, offers_to, pxe_discover, start_dnsmasq, udp_socket, veth_lab

from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREQUEST, DhcpPacket, build, parse
from provisiond.dhcp.server import DhcpServer
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Source, State
from provisiond.store import Store

pytestmark = pytest.mark.root

# dnsmasq answers as 10.213.1.1 (the interface's first address); provisiond as site.server.
INVENTORY = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.1.0/24
  gateway: 10.213.1.1
  server: 10.213.1.2
nodes:
  - {hostname: pxe1, mac: "52:54:00:d2:00:01", role: compute, ip: 10.213.1.11}
"""
MAC = "52:54:00:d2:00:01"


@pytest.fixture(scope="module")
def proxy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Store, DhcpServer]]:
    tmp = tmp_path_factory.mktemp("proxy")
    (tmp / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp / "inventory.yaml")
    store = Store.in_state_dir(tmp / "state")
    store.sync_nodes({n.hostname: n.mac for n in inventory.nodes})
    store.set_netboot("pxe1", True, Source.OPERATOR)
    with veth_lab("p", ("10.213.1.1/24", "10.213.1.2/24")) as lab:
        proc = start_dnsmasq(lab, tmp)
        server = DhcpServer(inventory, store, lab.server_if, proxy=True)
        try:
            with in_netns(lab.server_ns):
                server.start()
            yield lab, store, server
        finally:
            server.stop()
            stop_process(proc, grace=5)


def test_plain_client_gets_address_from_dnsmasq_only(proxy_lab, tmp_path: Path) -> None:
    lab, _, server = proxy_lab
    lab.set_client_mac(MAC)
    before = server.stats["ignore"]
    env = dhclient(lab, tmp_path)
    assert env is not None
    assert env["new_dhcp_server_identifier"] == "10.213.1.1"
    assert IPv4Address(env["new_ip_address"]) in range_of("10.213.1.100", "10.213.1.150")
    assert server.stats["ignore"] > before  # seen, and left to dnsmasq: not a PXE client
    assert server.stats["offer"] == 0


def range_of(first: str, last: str) -> set[IPv4Address]:
    return {IPv4Address(i) for i in range(int(IPv4Address(first)), int(IPv4Address(last)) + 1)}


def test_pxe_client_gets_address_from_dnsmasq_and_boot_file_from_provisiond(proxy_lab) -> None:
    lab, store, _ = proxy_lab
    lab.set_client_mac(MAC)
    discover = pxe_discover(MAC, {Opt.CLIENT_UUID: b"\x00" + bytes(range(16))})
    xid = discover.xid
    offers = {reply.server_id: reply for reply in offers_to(lab, discover) if reply.server_id is not None}
    assert set(offers) == {IPv4Address("10.213.1.1"), IPv4Address("10.213.1.2")}
    address_offer, boot_offer = offers[IPv4Address("10.213.1.1")], offers[IPv4Address("10.213.1.2")]
    assert address_offer.yiaddr in range_of("10.213.1.100", "10.213.1.150")
    assert boot_offer.yiaddr == IPv4Address(0)
    assert boot_offer.file == b"undionly.kpxe" and boot_offer.siaddr == IPv4Address("10.213.1.2")
    assert boot_offer.options[Opt.VENDOR_CLASS] == b"PXEClient"
    assert boot_offer.options[Opt.CLIENT_UUID] == discover.options[Opt.CLIENT_UUID]

    # With the address from dnsmasq, the PXE client asks the boot server on port 4011.
    client_ip = str(address_offer.yiaddr)
    lab.client_address(f"{client_ip}/24")
    try:
        request = DhcpPacket(
            op=BOOTREQUEST, xid=xid + 1, chaddr=discover.chaddr, ciaddr=address_offer.yiaddr,
            options={Opt.MESSAGE_TYPE: bytes([MessageType.REQUEST]), Opt.VENDOR_CLASS: PXE_VENDOR,
                     Opt.CLIENT_ARCH: b"\x00\x07"},
        )
        with udp_socket(lab.client_ns, lab.client_if, client_ip, 0) as sock:
            sock.settimeout(3)
            sock.sendto(build(request), ("10.213.1.2", 4011))
            data, source = sock.recvfrom(4096)
    finally:
        lab.client_address(f"{client_ip}/24", add=False)
    ack = parse(data)
    assert source == ("10.213.1.2", 4011)
    assert ack.message_type is MessageType.ACK and ack.xid == xid + 1
    assert ack.file == b"ipxe.efi" and ack.yiaddr == IPv4Address(0)
    assert store.node("pxe1").state is State.PXE
    assert store.lease_for(MAC) is None  # proxyDHCP never hands out (or records) addresses

