"""Doctor's pure parts: the verdicts from gathered facts, the probe's packets, the assets table,
and run_doctor on real files (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from conftest import LAB_SITE_YAML

from provisiond.config import Config
from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREPLY, DhcpPacket, build, parse
from provisiond.doctor import assets
from provisiond.doctor.checks import (
    Offer,
    PortHolder,
    Report,
    Status,
    interface_result,
    listening_inodes,
    port_result,
    relay_results,
    rogue_dhcp_result,
)
from provisiond.doctor.probe import discover, offer_from
from provisiond.doctor.run import DoctorOptions, kickstart_problem, run_doctor
from provisiond.images import cache as image_cache
from provisiond.images.build import build_inputs
from provisiond.images.recipes import node_root_recipe, root_recipe
from provisiond.inventory import load_inventory

NET, SERVER = IPv4Network("10.213.0.0/24"), IPv4Address("10.213.0.1")
NODES = """\
nodes:
  - {hostname: deb1, mac: '52:54:00:10:00:11', role: compute, ip: 10.213.0.11}
  - {hostname: rocky1, mac: '52:54:00:10:00:12', role: compute, ip: 10.213.0.12, os: rocky9, firmware: uefi}
"""


def test_interface_verdicts():
    site = [(NET, SERVER)]
    assert interface_result("eth9", False, False, [], site).status is Status.FAIL
    off_site = interface_result("eth0", True, True, [IPv4Interface("192.0.2.1/24")], site)
    assert off_site.status is Status.FAIL and "ip addr add 10.213.0.1/24 dev eth0" in off_site.fix
    assert interface_result("eth0", True, False, [IPv4Interface("10.213.0.1/24")], site).status is Status.FAIL
    assert interface_result("eth0", True, True, [IPv4Interface("10.213.0.5/24")], site).status is Status.WARN
    assert interface_result("eth0", True, True, [IPv4Interface("10.213.0.1/24")], site).status is Status.OK


def test_interface_verdicts_cover_every_network_of_the_site(tmp_path):
    """An interface on a relayed network (serve accepts it) is on the site; off all of them,
    the message names every network."""
    relays = "  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1, server: 10.214.0.2}\n"
    (tmp_path / "inventory.yaml").write_text(LAB_SITE_YAML + relays + NODES)
    site = load_inventory(tmp_path / "inventory.yaml").site
    networks = [(network.network, network.server) for network in site.all_networks]
    on_relayed = interface_result("eth1", True, True, [IPv4Interface("10.214.0.2/24")], networks)
    assert on_relayed.status is Status.OK and "10.214.0.2 in 10.214.0.0/24" in on_relayed.message
    other = interface_result("eth1", True, True, [IPv4Interface("10.214.0.7/24")], networks)
    assert other.status is Status.WARN and "10.214.0.2 for 10.214.0.0/24" in other.message
    nowhere = interface_result("eth1", True, True, [IPv4Interface("192.0.2.1/24")], networks)
    assert nowhere.status is Status.FAIL
    assert "10.213.0.0/24, 10.214.0.0/24" in nowhere.message


def test_relay_verdicts(tmp_path):
    relays = ("  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1}\n"
              "    - {network: 10.215.0.0/24, gateway: 10.215.0.1, server: 10.215.0.2}\n")
    (tmp_path / "inventory.yaml").write_text(LAB_SITE_YAML + relays + NODES)
    networks = load_inventory(tmp_path / "inventory.yaml").site.all_networks
    verdicts = {r.subject: r for r in relay_results(networks, [SERVER])}
    assert set(verdicts) == {"10.214.0.0/24", "10.215.0.0/24"}  # the site network is not relayed
    assert verdicts["10.214.0.0/24"].status is Status.OK  # served at site.server, which serve holds
    assert verdicts["10.215.0.0/24"].status is Status.FAIL
    assert "served at 10.215.0.2" in verdicts["10.215.0.0/24"].message
    assert "only on 10.213.0.1" in verdicts["10.215.0.0/24"].message
    both = relay_results(networks, [SERVER, IPv4Address("10.215.0.2")])
    assert all(r.status is Status.OK for r in both)


def test_doctor_run_checks_relayed_networks_against_the_served_interface(tmp_path):
    """run_doctor on this machine's loopback (127.0.0.1 as the site's server): the relayed
    network whose server is not served fails, and the whole report fails with it."""
    site = LAB_SITE_YAML.replace("10.213.0.0/24", "127.0.0.0/8").replace("10.213.0.1", "127.0.0.1")
    relays = ("  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1}\n"
              "    - {network: 10.215.0.0/24, gateway: 10.215.0.1, server: 10.215.0.2}\n")
    (tmp_path / "inventory.yaml").write_text(site + relays + "nodes:\n"
                                             "  - {hostname: n1, mac: '52:54:00:10:00:11', role: compute, "
                                             "ip: 10.214.0.11}\n")
    config = Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "state", interfaces=("lo",))
    report = run_doctor(config, DoctorOptions(skip=frozenset(
        {"port", "rogue-dhcp", "assets", "answers", "bmc", "dns"})))
    verdicts = {(r.check, r.subject): r.status for r in report.results}
    assert verdicts[("interface", "lo")] is Status.OK
    assert verdicts[("relay", "10.214.0.0/24")] is Status.OK
    assert verdicts[("relay", "10.215.0.0/24")] is Status.FAIL
    assert report.exit_code == 1


def test_port_verdicts_and_proc_net_parsing():
    table = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
             "   0: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242\n"
             "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77\n"
             "   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 78\n")
    assert listening_inodes(table, 67, udp=True) == {4242}
    assert listening_inodes(table + table.replace("4242", "4343"), 67, udp=True) == {4242, 4343}  # udp + udp6
    assert listening_inodes(table, 8080, udp=False) == {77}  # the established one is not a listener
    assert port_result("udp", 67, "DHCP", []).status is Status.OK
    assert port_result("udp", 67, "DHCP", [PortHolder(9, "/usr/bin/python3 -m provisiond serve")]).status is Status.OK
    held = port_result("udp", 67, "DHCP", [PortHolder(31, "/usr/sbin/dnsmasq -k")])
    assert held.status is Status.FAIL and "dnsmasq -k (pid 31)" in held.message


def test_rogue_dhcp_verdicts():
    ours = Offer(SERVER, IPv4Address("10.213.0.50"), SERVER)
    rogue = Offer(IPv4Address("10.213.0.2"), IPv4Address("10.213.0.120"), IPv4Address("10.213.0.2"))
    assert rogue_dhcp_result("br0", [ours], {SERVER}, 3, proxy=False).status is Status.OK
    result = rogue_dhcp_result("br0", [ours, rogue], {SERVER}, 3, proxy=False)
    assert result.status is Status.FAIL and "10.213.0.2 (offered 10.213.0.120)" in result.message
    assert rogue_dhcp_result("br0", [rogue], {SERVER}, 3, proxy=True).status is Status.OK


def test_probe_packets_round_trip_through_the_dhcp_code():
    mac = bytes.fromhex("027064000001")
    request = parse(discover(mac, 0x1234))
    assert request.message_type is MessageType.DISCOVER and request.broadcast and request.chaddr == mac
    offer = build(DhcpPacket(op=BOOTREPLY, xid=0x1234, chaddr=mac, yiaddr=IPv4Address("10.213.0.120"),
                             options={Opt.MESSAGE_TYPE: bytes([MessageType.OFFER]),
                                      Opt.SERVER_ID: IPv4Address("10.213.0.2").packed}))
    assert offer_from(offer, IPv4Address("10.213.0.2"), mac, 0x1234) == Offer(
        IPv4Address("10.213.0.2"), IPv4Address("10.213.0.120"), IPv4Address("10.213.0.2"))
    assert offer_from(offer, IPv4Address("10.213.0.2"), mac, 0x9999) is None  # someone else's exchange
    assert offer_from(b"junk", IPv4Address("10.213.0.2"), mac, 0x1234) is None


def test_report_status_and_exit_code():
    from provisiond.doctor.checks import Result
    assert Report((Result("a", Status.OK, ""), Result("b", Status.WARN, ""))).exit_code == 0
    report = Report((Result("a", Status.OK, ""), Result("b", Status.FAIL, "")))
    assert report.exit_code == 1 and report.json()["counts"] == {"ok": 1, "warn": 0, "fail": 1}


def test_asset_providers():
    assert assets.provider(Path("/usr/lib/ipxe/ipxe.efi")) == "apt install ipxe"
    assert assets.provider(Path("/usr/lib/debian-installer/images/12/amd64/text/pxelinux.0")) == \
        "apt install debian-installer-12-netboot-amd64"
    assert "Rocky Linux 9" in assets.provider(Path("/srv/provisiond/rocky9/vmlinuz"), "rocky9")


def write_site(tmp_path: Path, nodes: str = NODES) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(LAB_SITE_YAML + nodes)
    return path


def test_missing_boot_assets_name_the_package(tmp_path):
    inventory = write_site(tmp_path)
    base = Config(inventory=inventory, state_dir=tmp_path / "state")
    missing_kernel = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/no-such-linux")
    config = replace(base, assets={**base.assets, "debian12": replace(base.assets["debian12"], kernel=missing_kernel)},
                     loaders={**base.loaders, "ipxe.efi": Path("/usr/lib/ipxe/no-such-ipxe.efi")})
    options = DoctorOptions(skip=frozenset({"port", "bmc", "dns"}))
    report = run_doctor(config, options)
    failed = {r.subject: r for r in report.results if r.check == "assets" and r.status is Status.FAIL}
    assert failed[str(missing_kernel)].fix == "apt install debian-installer-12-netboot-amd64"
    assert "needed by deb1" in failed[str(missing_kernel)].message
    assert failed["/usr/lib/ipxe/no-such-ipxe.efi"].fix == "apt install ipxe"
    assert "needed by rocky1" in failed["/usr/lib/ipxe/no-such-ipxe.efi"].message
    assert "Rocky Linux 9" in failed["/srv/provisiond/rocky9/vmlinuz"].fix
    assert report.exit_code == 1


def test_on_an_openstack_site_doctor_looks_for_the_openstack_root_images(tmp_path):
    """A node of a site with `openstack:` deploys root-<os>-<role>-openstack (the role's
    OpenStack packages inside): doctor checks that build, the one the deploy serves, and a
    plain build of the role does not count."""
    path = write_site(tmp_path, "  openstack: {workers: 1}\n" + """\
nodes:
  - {hostname: ctl1, mac: '52:54:00:10:00:11', role: controller, ip: 10.213.0.11, install: image}
  - {hostname: cmp1, mac: '52:54:00:10:00:12', role: compute, ip: 10.213.0.12, install: image}
""")
    config = replace(Config(inventory=path, state_dir=tmp_path / "state"), image_cache=tmp_path / "cache")
    inventory = load_inventory(path)
    compute = node_root_recipe(inventory.node("cmp1"), inventory.site)
    assert compute.name == "root-debian12-compute-openstack"
    cache = image_cache.ImageCache(config.image_cache)
    for recipe in (compute, root_recipe("debian12", "controller")):  # the controller's is plain
        staging = cache.dir / f".staging-{recipe.name}"
        staging.mkdir(parents=True)
        (staging / "root.tar.zst").write_bytes(b"image")
        image_cache.publish(staging, [staging / "root.tar.zst"], recipe,
                            recipe.key(*build_inputs(recipe)), cache, 0.0, {})
    report = run_doctor(config, DoctorOptions(skip=frozenset({"port", "bmc", "dns", "answers"})))
    images = {r.subject: r for r in report.results if r.check == "assets" and r.subject.startswith("root-")}
    assert images["root-debian12-compute-openstack"].status is Status.OK
    assert images["root-debian12-controller-openstack"].status is Status.FAIL
    assert "is not built (needed by ctl1)" in images["root-debian12-controller-openstack"].message
    assert set(images) == {"root-debian12-compute-openstack", "root-debian12-controller-openstack"}


def test_answers_render_and_kickstarts_pass_pykickstart(tmp_path):
    config = Config(inventory=write_site(tmp_path), state_dir=tmp_path / "state")
    report = run_doctor(config, DoctorOptions(skip=frozenset({"port", "bmc", "dns", "assets"})))
    answers = {r.subject: r for r in report.results if r.check == "answers"}
    assert answers["deb1"].status is Status.OK and answers["deb1"].message == "preseed renders"
    assert answers["rocky1"].status is Status.OK and "pykickstart accepts it" in answers["rocky1"].message
    assert kickstart_problem("part / --fstype=xfs --size=1000\nnosuchcommand --x\n")


def test_a_bad_inventory_fails_with_every_problem(tmp_path):
    inventory = write_site(tmp_path, NODES.replace("10.213.0.12", "10.213.0.11"))
    result = subprocess.run([sys.executable, "-m", "provisiond", "--inventory", str(inventory), "--state-dir",
                             str(tmp_path / "state"), "doctor", "--json", "--skip", "port"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    assert any(r["check"] == "inventory" and "duplicate ip 10.213.0.11" in r["message"] for r in report["results"])
