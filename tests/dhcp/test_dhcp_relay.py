"""DHCP through real relay agents: ISC dhcrelay and dnsmasq --dhcp-relay in a router between a
client segment (10.214.0.0/24) and the server's segment (10.213.0.0/24), both in the inventory.

Known MACs get their reserved address on the client subnet, its router and (for a boot client)
the boot file, all answered to the relay; an unknown MAC gets nothing. The server reaches the
client subnet only by its one route via the router (tests/relaylab.py): no proxy ARP, no host
routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dhcp_lab import dhclient, in_netns, udhcpc
from netlab import run
from relaylab import CLIENT_NET, RELAYS, ROUTER_UP, RelayLab, relay_lab

from provisiond.dhcp.server import DhcpServer
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Source, State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

INVENTORY = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.0.0/24
  gateway: 10.213.0.254
  server: 10.213.0.1
  dns: [10.213.0.53]
  networks:
    - network: 10.214.0.0/24
      gateway: 10.214.0.1
      domain: rack2.lab.example
      dns: [10.214.0.53]
nodes:
  - {hostname: local1, mac: "52:54:00:e1:00:01", role: compute, ip: 10.213.0.11}
  - {hostname: rack1, mac: "52:54:00:e2:00:01", role: compute, ip: 10.214.0.11}
  - {hostname: rack2, mac: "52:54:00:e2:00:02", role: compute, ip: 10.214.0.12}
  - {hostname: rack3, mac: "52:54:00:e2:00:03", role: compute, ip: 10.214.0.13}
"""
RACK1, RACK2, RACK3, LOCAL1 = "52:54:00:e2:00:01", "52:54:00:e2:00:02", "52:54:00:e2:00:03", "52:54:00:e1:00:01"
UNKNOWN = "52:54:00:e2:00:99"
PXE_BIOS = ("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayLab, Store, DhcpServer]]:
    tmp = tmp_path_factory.mktemp("relay")
    (tmp / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp / "inventory.yaml")
    store = Store.in_state_dir(tmp / "state")
    store.sync_nodes({node.hostname: node.mac for node in inventory.nodes})
    with relay_lab(tmp / "lab") as lab:
        server = DhcpServer(inventory, store, lab.server_if)
        with in_netns(lab.server_ns):
            server.start()
        try:
            yield lab, store, server
        finally:
            server.stop()


@pytest.fixture(params=RELAYS)
def relayed(request: pytest.FixtureRequest, site) -> Iterator[tuple[RelayLab, Store, DhcpServer]]:
    lab, store, server = site
    lab.start_relay(request.param)
    try:
        yield lab, store, server
    finally:
        lab.stop_relay()


def test_the_site_has_no_proxy_arp_and_one_route_to_the_client_subnet(site) -> None:
    lab, _, _ = site
    routes = {route.split(" proto ")[0].strip() for route in lab.routes(lab.server_ns)}
    assert routes == {f"{CLIENT_NET} via {ROUTER_UP} dev {lab.server_if}", f"10.213.0.0/24 dev {lab.server_if}"}
    for leg in (lab.uplink_if, "br0", "all"):
        setting = run("ip", "netns", "exec", lab.router_ns, "cat", f"/proc/sys/net/ipv4/conf/{leg}/proxy_arp")
        assert setting.stdout.strip() == "0"


def test_udhcpc_gets_its_reservation_router_and_boot_file_through_the_relay(relayed, tmp_path: Path) -> None:
    lab, store, server = relayed
    store.set_netboot("rack1", True, Source.OPERATOR)
    lab.set_client_mac(RACK1)
    before = server.stats["offer"]
    env = udhcpc(lab.client, tmp_path, *PXE_BIOS)
    assert env is not None, lab.relay_log()
    assert (env["ip"], env["subnet"], env["router"]) == ("10.214.0.11", "255.255.255.0", "10.214.0.1")
    assert (env["dns"], env["domain"], env["hostname"]) == ("10.214.0.53", "rack2.lab.example", "rack1")
    assert (env["serverid"], env["siaddr"], env["boot_file"]) == ("10.213.0.1", "10.213.0.1", "undionly.kpxe")
    assert server.stats["offer"] > before
    assert store.lease_for(RACK1).ip == "10.214.0.11"
    assert store.node("rack1").state is State.PXE


def test_ipxe_gets_its_script_url_on_the_server_through_the_relay(relayed, tmp_path: Path) -> None:
    lab, store, _ = relayed
    store.set_netboot("rack3", True, Source.OPERATOR)
    lab.set_client_mac(RACK3)
    env = udhcpc(lab.client, tmp_path, "-x", "0x5d:0000", "-x", "0x4d:69505845")  # user class iPXE
    assert env is not None, lab.relay_log()
    assert env["ip"] == "10.214.0.13" and env["router"] == "10.214.0.1"
    assert env["boot_file"] == f"http://10.213.0.1:8080/boot/{RACK3}.ipxe"


def test_dhclient_gets_its_reservation_and_router_through_the_relay(relayed, tmp_path: Path) -> None:
    lab, store, _ = relayed
    lab.set_client_mac(RACK2)
    env = dhclient(lab.client, tmp_path)
    assert env is not None, (tmp_path / "dhclient.log").read_text() + lab.relay_log()
    assert (env["new_ip_address"], env["new_subnet_mask"], env["new_routers"]) == (
        "10.214.0.12", "255.255.255.0", "10.214.0.1")
    assert env["new_dhcp_server_identifier"] == "10.213.0.1"
    assert env["new_domain_name"] == "rack2.lab.example" and env["new_host_name"] == "rack2"
    assert "new_filename" not in env  # an OS's DHCP client is not a boot client
    assert store.lease_for(RACK2).ip == "10.214.0.12"


def test_unknown_mac_gets_nothing_through_the_relay(relayed, tmp_path: Path) -> None:
    lab, store, server = relayed
    lab.set_client_mac(UNKNOWN)
    before = server.stats["received"]
    assert udhcpc(lab.client, tmp_path, *PXE_BIOS, tries=2) is None
    assert server.stats["received"] > before  # it came through the relay, and was not answered
    seen = {entry["mac"]: entry for entry in store.seen_macs()}
    assert seen[UNKNOWN]["detail"]["relay"] == "10.214.0.1"
    assert store.lease_for(UNKNOWN) is None


def test_a_node_of_the_server_segment_is_not_answered_on_the_client_segment(relayed, tmp_path: Path) -> None:
    """The inventory puts local1 on 10.213.0.0/24: plugged in behind the router, it gets nothing
    (never an address of the wrong subnet)."""
    lab, store, _ = relayed
    lab.set_client_mac(LOCAL1)
    assert udhcpc(lab.client, tmp_path, tries=2) is None
    assert store.lease_for(LOCAL1) is None


def test_unknown_mac_gets_an_address_of_the_relayed_networks_pool(tmp_path: Path) -> None:
    """A network's `pool` serves discovery on that network only: through the relay, an unknown
    MAC gets an address of the client subnet's pool, never one of the server segment's."""
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(INVENTORY.replace(
        "      dns: [10.214.0.53]\n", "      dns: [10.214.0.53]\n      pool: 10.214.0.100-10.214.0.109\n").replace(
        "  dns: [10.213.0.53]\n", "  dns: [10.213.0.53]\n  pool: 10.213.0.100-10.213.0.109\n", 1))
    inventory = load_inventory(inventory_path)
    store = Store.in_state_dir(tmp_path / "state")
    store.sync_nodes({node.hostname: node.mac for node in inventory.nodes})
    with relay_lab(tmp_path / "lab", tag="p") as lab:
        server = DhcpServer(inventory, store, lab.server_if)
        with in_netns(lab.server_ns):
            server.start()
        try:
            lab.start_relay("dhcrelay")
            lab.set_client_mac(UNKNOWN)
            env = udhcpc(lab.client, tmp_path / "udhcpc")
        finally:
            server.stop()
    assert env is not None, lab.relay_log()
    assert env["ip"] == "10.214.0.100" and env["router"] == "10.214.0.1" and "hostname" not in env
    lease = Store.in_state_dir(tmp_path / "state").lease_for(UNKNOWN)
    assert lease is not None and lease.ip == "10.214.0.100"
