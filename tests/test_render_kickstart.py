"""Kickstarts: accepted by the real ksvalidator, and checked through pykickstart's own parser
for what ksvalidator does not catch (logvol on an undefined VG, a PV used twice, duplicate
mount points), and matched against the storage model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PAPER_COMPUTE_DISK, SITE_YAML
from pykickstart.parser import KickstartParser
from pykickstart.version import RHEL9, makeVersion

from provisiond.inventory import load_inventory
from provisiond.layouts import plan_layout
from provisiond.render import Renderer, ServerInfo

ROCKY_NODES = """\
nodes:
  - {hostname: compute1, mac: "52:54:00:10:00:11", role: compute, ip: 10.213.0.11, os: rocky9,
     disk: {device: sda, size: COMPUTE_DISK}}
  - {hostname: controller, mac: "52:54:00:10:00:10", role: controller, ip: 10.213.0.10, os: rocky9,
     disk: {device: sda, size: 80G}}
  - {hostname: compute-40g, mac: "52:54:00:10:00:21", role: compute, ip: 10.213.0.21, os: rocky9,
     disk: {device: vda, size: 40G}}
  - {hostname: controller-2t, mac: "52:54:00:10:00:22", role: controller, ip: 10.213.0.22, os: rocky9,
     disk: {device: sdb, size: 2T}}
  - {hostname: compute-any, mac: "52:54:00:10:00:23", role: compute, ip: 10.213.0.23, os: rocky9}
  - {hostname: controller-any, mac: "52:54:00:10:00:24", role: controller, ip: 10.213.0.24, os: rocky9}
  - {hostname: compute-uefi, mac: "52:54:00:10:00:25", role: compute, ip: 10.213.0.25, os: rocky9,
     firmware: uefi, disk: {device: nvme0n1, size: 250G}}
  - {hostname: controller-uefi, mac: "52:54:00:10:00:26", role: controller, ip: 10.213.0.26, os: rocky9,
     firmware: uefi, disk: {device: sda, size: 80G}}
""".replace("COMPUTE_DISK", str(PAPER_COMPUTE_DISK))

HOSTS = ["compute1", "controller", "compute-40g", "controller-2t", "compute-any", "controller-any",
         "compute-uefi", "controller-uefi"]


@pytest.fixture
def rocky(write_inventory):
    return load_inventory(write_inventory(SITE_YAML + ROCKY_NODES))


def parse(text: str) -> KickstartParser:
    parser = KickstartParser(makeVersion(RHEL9))
    parser.readKickstartFromString(text)
    return parser


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("with_server", [False, True])
def test_ksvalidator_accepts_every_layout(rocky, tmp_path, host, with_server):
    ksvalidator = str(Path(sys.executable).parent / "ksvalidator")  # pykickstart, a test extra
    server = ServerInfo("http://10.213.0.1:8080", "t0ken", "ag3nt") if with_server else None
    path = tmp_path / f"{host}.ks"
    path.write_text(Renderer(rocky).kickstart(rocky.node(host), server))
    result = subprocess.run([ksvalidator, "-v", "RHEL9", str(path)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).replace(f"Checking kickstart file {path}", "").strip()
    assert result.returncode == 0, output
    assert output == "", output  # no warning either


def storage_problems(handler) -> list[str]:
    """What ksvalidator lets through: PVs not in exactly one VG, LVs on undefined VGs, mounts twice."""
    problems = []
    pvs = [p.mountpoint for p in handler.partition.partitions if p.mountpoint.startswith("pv.")]
    vgs = {vg.vgname: vg.physvols for vg in handler.volgroup.vgList}
    used = [pv for physvols in vgs.values() for pv in physvols]
    problems += [f"PV {pv} used {used.count(pv)} times" for pv in sorted(set(pvs) | set(used)) if used.count(pv) != 1]
    problems += [f"logvol {lv.name} on undefined VG {lv.vgname}" for lv in handler.logvol.lvList if lv.vgname not in vgs]
    mounts = [p.mountpoint for p in handler.partition.partitions if not p.mountpoint.startswith("pv.")]
    mounts += [lv.mountpoint for lv in handler.logvol.lvList if lv.mountpoint != "swap"]
    problems += [f"mount point {m} used twice" for m in sorted(set(mounts)) if mounts.count(m) > 1]
    return problems


@pytest.mark.filterwarnings("ignore:A partition with the mountpoint")
def test_storage_checks_catch_what_ksvalidator_lets_through():
    broken = """\
part /boot --size=500 --fstype=ext4
part /boot --size=500 --fstype=ext4
part pv.1 --size=1000
part pv.2 --size=1000
volgroup vg_a pv.1
volgroup vg_b pv.1
logvol / --vgname=vg_missing --name=lv_root --size=100
"""
    assert storage_problems(parse(broken).handler) == [
        "PV pv.1 used 2 times", "PV pv.2 used 0 times",
        "logvol lv_root on undefined VG vg_missing", "mount point /boot used twice",
    ]


@pytest.mark.parametrize("host", HOSTS)
def test_storage_is_consistent_and_matches_the_model(rocky, host):
    node = rocky.node(host)
    handler = parse(Renderer(rocky).kickstart(node)).handler
    layout = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)

    assert storage_problems(handler) == []
    vgs = {vg.vgname: vg.physvols for vg in handler.volgroup.vgList}

    # The kickstart says what the model says: same VGs, LVs, sizes, file systems, mounts.
    assert set(vgs) == {vg.name for vg in layout.volume_groups}
    rendered = {(lv.vgname, lv.name): lv for lv in handler.logvol.lvList}
    for vg in layout.volume_groups:
        for lv in vg.logical_volumes:
            got = rendered.pop((vg.name, lv.name))
            assert got.mountpoint == ("swap" if lv.is_swap else lv.mount)
            if not lv.is_swap:
                assert got.fstype == lv.fstype
            if lv.size_mib is not None:
                assert got.size == lv.size_mib
            else:
                assert got.grow and got.percent == 100
            assert got.grow == lv.grow
    assert not rendered, "no logical volume the model does not have"
    assert handler.clearpart.drives == [layout.device]
    assert handler.clearpart.disklabel == layout.label


def test_acceptance_compute_on_250_gb(rocky, write_inventory):
    text = Renderer(rocky).kickstart(rocky.node("compute1"))
    assert "part /boot --ondisk=sda --fstype=ext4 --size=500" in text
    assert "logvol / --vgname=vg_base --name=lv_root --fstype=ext4 --size=10000" in text
    assert "logvol swap --vgname=vg_base --name=lv_swap --size=6000" in text
    assert "logvol /home --vgname=vg_base --name=lv_home --fstype=ext4 --size=4996" in text
    assert "logvol /export/gluster --vgname=vg_gluster --name=lv_gluster --fstype=xfs --size=216972 --grow" in text


def test_acceptance_controller_on_80_gb(rocky):
    text = Renderer(rocky).kickstart(rocky.node("controller"))
    assert "volgroup nova-volumes --pesize=4096 pv.3" in text
    assert "--vgname=nova-volumes" not in text  # no logical volume in nova-volumes
    assert "logvol /var/lib/glance/images --vgname=vg_images --name=lv_images --fstype=ext4 --size=28788" in text
    assert "logvol swap --vgname=vg_base --name=lv_swap --size=2000" in text


def test_node_settings(rocky):
    node = rocky.node("compute1")
    handler = parse(Renderer(rocky).kickstart(node, ServerInfo("http://10.213.0.1:8080", "t0ken"))).handler
    net = handler.network.network[0]
    assert (net.bootProto, net.device, net.ip, net.netmask, net.gateway) == (
        "static", "52:54:00:10:00:11", "10.213.0.11", "255.255.255.0", "10.213.0.1")
    assert net.hostname == "compute1.lab.example"
    assert net.nameserver == "10.213.0.1"
    assert handler.rootpw.isCrypted and handler.rootpw.password.startswith("$6$")
    assert [key.username for key in handler.sshkey.sshUserList] == ["root"]
    assert handler.timesource.dataList()[0].ntp_server == "10.213.0.1"
    scripts = "\n".join(script.script for script in handler.scripts)
    assert "install-started" in scripts and "install-finished" in scripts
    assert "http://10.213.0.1:8080/api/v1/nodes/compute1/events" in scripts
    assert "/etc/provisiond/node.token" in scripts


def test_no_secrets_without_a_server(rocky):
    text = Renderer(rocky).kickstart(rocky.node("compute1"))
    assert "Authorization" not in text and "node.token" not in text
    assert "added when `provisiond serve` renders" in text


def test_operator_template_override(rocky, tmp_path):
    override = tmp_path / "templates" / "partials"
    override.mkdir(parents=True)
    (override / "post-install.sh.j2").write_text("echo site-specific post step for {{ node.hostname }}\n")
    text = Renderer(rocky, [tmp_path / "templates"]).kickstart(rocky.node("compute1"))
    assert "echo site-specific post step for compute1" in text
