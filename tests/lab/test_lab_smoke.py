"""`make lab-smoke`: real firmware against provisiond, started the way hardware is.

One BIOS node (SeaBIOS + the e1000's iPXE ROM) and one UEFI node (OVMF, EDK2's own PXE on
virtio-net), each a QEMU VM behind its virtual BMC, are powered on by `provisiond provision`
over IPMI: nothing else touches the VMs. They do DHCP, TFTP, iPXE and HTTP against `provisiond
serve` on the lab bridge, boot the Debian installer and fetch their preseed; provisiond
records `pxe` and `installing` for both from the firmware's and installer's own requests.
Afterwards nothing of the lab is left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_program
from lab_helpers import qemu_pids, require_qemu

from provisiond.lab.orchestrator import Lab
from provisiond.lab.plan import lab_nodes
from provisiond.lab.ports import free_udp_ports
from provisiond.lifecycle import State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(1500)]

INSTALLER = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")
# Seconds for both nodes; TCG on shared cores: measured 1-2 min each, but more than 10 min with
# the machine's load at 15 (each guest gets a sixth of a core).
BOOT_LIMIT = 1200


def test_bios_and_uefi_vms_powered_over_ipmi_reach_their_installer(tmp_path: Path) -> None:
    require_qemu()
    require_program("ipmitool")
    if not INSTALLER.exists():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed (make test installs it)")
    nodes = lab_nodes(1, ["controller=bios", "compute1=uefi"], bmc_base_port=free_udp_ports(2),
                      controller_mib=1024)
    lines: list[str] = []
    lab = Lab(nodes, "preseed", tmp_path / "lab", out=lines.append)
    try:
        lab.up()
        lab.provision()
        reached = lab.watch(until=State.INSTALLING, timeout=BOOT_LIMIT)
        assert reached, "\n".join(lines)
        store = Store.in_state_dir(lab.state_dir)
        for node in nodes:
            states = [(e.kind, e.source) for e in store.events(hostname=node.hostname)
                      if e.kind.startswith("state:")]
            assert states == [("state:powering-on", "operator"), ("state:pxe", "dhcp"),
                              ("state:installing", "http")], (node.hostname, states)
            fetched = next(e for e in store.events(hostname=node.hostname)
                           if e.kind == "state:installing")
            assert fetched.detail["fetched"] == "preseed" and fetched.detail["peer"] == node.ip
            power = next(e for e in store.events(hostname=node.hostname) if e.kind == "power:pxe-boot")
            assert power.detail["ok"] is True
        store.close()
        bmc_log = lab.bmcs.output() if lab.bmcs else ""
        assert "controller boots from network (one-time, bios)" in bmc_log
        assert "compute1 boots from network (one-time, uefi)" in bmc_log
        assert "Linux version" in lab.serial_tail("controller", 200_000)
        assert "Linux version" in lab.serial_tail("compute1", 200_000)
        network = lab.network
        assert network is not None
    finally:
        lab.down()
    assert not network.exists()
    assert qemu_pids(str(tmp_path)) == []
