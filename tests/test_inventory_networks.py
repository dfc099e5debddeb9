"""Several networks per site: `site.networks` (relayed subnets), each node on the network that
holds its address, with file:line errors for every way to get it wrong."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from conftest import LAB_SITE_YAML

from provisiond.inventory import InventoryError, load_inventory

NETWORKS = """\
  networks:
    - network: 10.214.0.0/24      # rack 2, behind the router's relay
      gateway: 10.214.0.1
    - network: 10.215.0.0/24
      gateway: 10.215.0.254
      server: 10.213.0.5
      dns: [10.215.0.53]
      ntp: [10.215.0.123]
      domain: rack3.lab.example
      pool: 10.215.0.100-10.215.0.199
"""
NODES = """\
nodes:
  - {hostname: n1, mac: "52:54:00:00:00:01", role: compute, ip: 10.213.0.11}
  - {hostname: n2, mac: "52:54:00:00:00:02", role: compute, ip: 10.214.0.11}
  - {hostname: n3, mac: "52:54:00:00:00:03", role: compute, ip: 10.215.0.11}
"""


def problems(path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return [problem.format(path) for problem in caught.value.problems]


def test_each_node_belongs_to_the_network_that_holds_its_address(write_inventory) -> None:
    inventory = load_inventory(write_inventory(LAB_SITE_YAML + NETWORKS + NODES))
    site = inventory.site
    primary, rack2, rack3 = site.all_networks
    assert (primary.network, primary.server, primary.relayed) == (IPv4Network("10.213.0.0/24"), site.server, False)
    # Defaults come from the site: server, DNS, NTP (the server), domain.
    assert (rack2.server, rack2.dns, rack2.ntp, rack2.domain, rack2.relayed) == (
        IPv4Address("10.213.0.1"), (IPv4Address("10.213.0.1"),), ("10.213.0.1",), "lab.example", True)
    assert (rack3.server, rack3.dns, rack3.ntp, rack3.domain) == (
        IPv4Address("10.213.0.5"), (IPv4Address("10.215.0.53"),), ("10.215.0.123",), "rack3.lab.example")
    assert rack3.pool == (IPv4Address("10.215.0.100"), IPv4Address("10.215.0.199"))
    assert [inventory.network(node).network for node in inventory.nodes] == [
        primary.network, rack2.network, rack3.network]
    assert inventory.node("n3").fqdn == "n3.rack3.lab.example"
    assert inventory.node("n2").fqdn == "n2.lab.example"


def test_single_network_inventory_is_unchanged(write_inventory) -> None:
    inventory = load_inventory(write_inventory(LAB_SITE_YAML + NODES.split("  - {hostname: n2")[0]))
    (only,) = inventory.site.all_networks
    assert (only.network, only.gateway, only.server, only.pool) == (
        IPv4Network("10.213.0.0/24"), IPv4Address("10.213.0.1"), IPv4Address("10.213.0.1"), None)


def test_node_outside_every_network_is_refused_with_its_line(write_inventory) -> None:
    text = LAB_SITE_YAML + NETWORKS + NODES + (
        '  - {hostname: n4, mac: "52:54:00:00:00:04", role: compute, ip: 10.216.0.11}\n'
        '  - {hostname: n5, mac: "52:54:00:00:00:05", role: compute, ip: 10.214.0.1}\n'
        '  - {hostname: n6, mac: "52:54:00:00:00:06", role: compute, ip: 10.215.0.150}\n')
    path = write_inventory(text)
    found = problems(path)
    assert found == [
        f"{path}:23: nodes[3].ip: 10.216.0.11 is outside every site network "
        "(10.213.0.0/24, 10.214.0.0/24, 10.215.0.0/24)",
        f"{path}:24: nodes[4].ip: 10.214.0.1 is the gateway of 10.214.0.0/24",
        f"{path}:25: nodes[5].ip: 10.215.0.150 is inside the dynamic pool "
        "10.215.0.100-10.215.0.199 of 10.215.0.0/24",
    ]


@pytest.mark.parametrize(("network", "expected"), [
    ("{network: 10.213.0.128/25, gateway: 10.213.0.129}",
     "site: networks[0]: 10.213.0.128/25 overlaps 10.213.0.0/24"),
    ("{network: 10.214.0.0/24, gateway: 10.215.0.1}",
     "site.networks[0]: gateway 10.215.0.1 is outside the network 10.214.0.0/24"),
    ("{network: 10.214.0.1/24, gateway: 10.214.0.1}",
     "site.networks[0].network: '10.214.0.1/24' has host bits set; did you mean 10.214.0.0/24?"),
    ("{network: 10.214.0.0/24, gateway: 10.214.0.1, pool: 10.214.0.1-10.214.0.9}",
     "site.networks[0]: pool 10.214.0.1-10.214.0.9 contains 10.214.0.1 (the gateway)"),
    ("{network: 10.214.0.0/24, gateway: 10.214.0.1, pool: 10.214.0.9-10.214.0.2}",
     "site.networks[0].pool: dynamic pool '10.214.0.9-10.214.0.2': the last address is before the first"),
    ("{network: 10.214.0.0/24, gateway: 10.214.0.1, relay: 10.214.0.1}",
     "site.networks[0].relay: unknown field 'relay'"),
])
def test_bad_network_is_refused_with_file_and_line(write_inventory, network: str, expected: str) -> None:
    path = write_inventory(LAB_SITE_YAML + f"  networks:\n    - {network}\n" + NODES.split("  - {hostname: n2")[0])
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:"), found
    assert found[0].split(": ", 1)[1] == expected, found


def test_site_pool_must_avoid_server_and_gateway(write_inventory) -> None:
    path = write_inventory(LAB_SITE_YAML + "  pool: 10.213.0.1-10.213.0.20\n" + NODES.split("  - {hostname: n2")[0])
    found = problems(path)
    assert found == [f"{path}:1: site: pool 10.213.0.1-10.213.0.20 contains 10.213.0.1 (the gateway), "
                     "10.213.0.1 (the server)"]
