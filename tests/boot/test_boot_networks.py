"""The boot decision for a node on a relayed network: its URLs use the server address of the
node's own network, and the installer gets that network's mask, gateway and domain; the
preseed states them too. (DHCP hands out the same loader: it asks the same decision.)"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from conftest import LAB_SITE_YAML

from provisiond.boot.decision import Client, base_url_for
from provisiond.boot.service import BootService
from provisiond.config import Config
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Source
from provisiond.render import Renderer
from provisiond.store import Store

INVENTORY = LAB_SITE_YAML + """\
  networks:
    - {network: 10.215.0.0/25, gateway: 10.215.0.126, server: 10.213.0.5, domain: rack3.lab.example,
       dns: [10.215.0.53]}
nodes:
  - {hostname: local1, mac: "52:54:00:00:00:01", role: compute, ip: 10.213.0.11}
  - {hostname: rack3a, mac: "52:54:00:00:00:02", role: compute, ip: 10.215.0.11}
"""
BASE = "http://10.213.0.1:8080"


def test_base_url_for_a_network() -> None:
    site, rack = IPv4Network("10.213.0.0/24"), IPv4Network("10.215.0.0/25")
    assert base_url_for(BASE, site, IPv4Address("10.213.0.1")) == BASE
    # Another address of ours on the node's network (the interface's, not site.server): kept.
    assert base_url_for("http://10.213.0.2:8080", site, IPv4Address("10.213.0.1")) == "http://10.213.0.2:8080"
    assert base_url_for(BASE, rack, IPv4Address("10.213.0.5")) == "http://10.213.0.5:8080"
    assert base_url_for("http://10.213.0.1/", rack, IPv4Address("10.213.0.5")) == "http://10.213.0.5/"
    assert base_url_for("", rack, IPv4Address("10.213.0.5")) == ""
    assert base_url_for("http://boot.lab.example:8080", rack, IPv4Address("10.213.0.5")) == \
        "http://boot.lab.example:8080"


def test_relayed_node_boots_with_its_own_networks_server_and_addressing(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp_path / "inventory.yaml")
    (tmp_path / "linux").write_bytes(b"kernel")
    (tmp_path / "initrd.gz").write_bytes(b"initrd")
    base = Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "state")
    config = replace(base, assets={**base.assets, "debian12": replace(
        base.assets["debian12"], kernel=tmp_path / "linux", initrd=tmp_path / "initrd.gz")})
    store = Store.in_state_dir(tmp_path / "state")
    store.sync_nodes({node.hostname: node.mac for node in inventory.nodes})
    for node in inventory.nodes:
        store.set_netboot(node.hostname, True, Source.OPERATOR)
    boot = BootService(inventory, store, config, BASE)

    local = boot.spec(inventory.node("local1"), Client.IPXE_BIOS)
    assert local.loader == f"{BASE}/boot/52:54:00:00:00:01.ipxe"
    assert "netcfg/get_gateway=10.213.0.1" in local.cmdline

    rack = boot.spec(inventory.node("rack3a"), Client.IPXE_BIOS)
    assert rack.loader == "http://10.213.0.5:8080/boot/52:54:00:00:00:02.ipxe"
    assert rack.kernel is not None and rack.kernel.url.startswith("http://10.213.0.5:8080/")
    assert rack.answer_url is not None and rack.answer_url.startswith("http://10.213.0.5:8080/")
    assert rack.fqdn == "rack3a.rack3.lab.example"
    for arg in ("netcfg/get_gateway=10.215.0.126", "netcfg/get_netmask=255.255.255.128",
                "domain=rack3.lab.example"):
        assert arg in rack.cmdline, rack.cmdline
    # The script served over HTTP (whatever Host the request used) points at the same server.
    script = boot.ipxe("52:54:00:00:00:02", base_url=BASE)
    assert script is not None and "http://10.213.0.5:8080/boot/debian12/" in script

    preseed = Renderer(inventory).preseed(inventory.node("rack3a"))
    for line in ("d-i netcfg/get_netmask string 255.255.255.128", "d-i netcfg/get_gateway string 10.215.0.126",
                 "d-i netcfg/get_nameservers string 10.215.0.53", "d-i netcfg/get_domain string rack3.lab.example"):
        assert line in preseed
