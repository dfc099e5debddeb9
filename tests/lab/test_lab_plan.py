"""The lab's plan (pure): nodes, firmware choices, the inventory it writes, phase times."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.errors import UserError
from provisiond.inventory import load_inventory
from provisiond.lab.plan import inventory_yaml, lab_nodes, parse_firmware_choices, phase_times, ssh_argv


def test_default_lab_is_one_controller_two_computes_mixing_firmware() -> None:
    nodes = lab_nodes()
    assert [(n.hostname, n.role, n.firmware) for n in nodes] == [
        ("controller", "controller", "bios"), ("compute1", "compute", "uefi"),
        ("compute2", "compute", "bios")]
    assert len({n.mac for n in nodes}) == len({n.ip for n in nodes}) == len({n.bmc_port for n in nodes}) == 3


def test_firmware_for_all_then_one_node() -> None:
    nodes = lab_nodes(3, ["uefi", "compute2=bios"])
    assert [n.firmware for n in nodes] == ["uefi", "uefi", "bios", "uefi"]


@pytest.mark.parametrize(("values", "message"), [
    (["efi"], "firmware must be one of bios, uefi"),
    (["compute9=uefi"], "no lab node 'compute9'"),
])
def test_bad_firmware_choices_say_what_is_wrong(values: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_firmware_choices(values, ["controller", "compute1"])


def test_too_many_computes_is_refused() -> None:
    with pytest.raises(UserError, match="--computes 99"):
        lab_nodes(99)


def test_the_lab_inventory_passes_provisiond_s_own_checks(tmp_path: Path) -> None:
    (tmp_path / "bmc.pass").write_text("pw\n")
    path = tmp_path / "inventory.yaml"
    path.write_text(inventory_yaml(lab_nodes(2), "preseed", str(tmp_path / "bmc.pass")))
    inventory = load_inventory(path)
    assert [node.hostname for node in inventory.nodes] == ["controller", "compute1", "compute2"]
    assert [node.uefi for node in inventory.nodes] == [False, True, False]
    assert inventory.nodes[1].bmc is not None and inventory.nodes[1].bmc.port == 16231


def test_unknown_install_method_is_refused() -> None:
    with pytest.raises(UserError, match="--install 'netinst'"):
        inventory_yaml(lab_nodes(0), "netinst", "/x")


def test_phase_times_from_state_entry_times() -> None:
    entered = {"powering-on": 100.0, "pxe": 104.0, "installing": 130.0, "installed": 230.0,
               "ready": 290.0}
    assert phase_times(entered) == {"power-on to PXE": 4.0, "PXE to installer": 26.0,
                                    "install": 100.0, "first boot + agent": 60.0}
    assert phase_times({"powering-on": 1.0}) == {}


def test_the_openstack_lab_has_the_memory_and_the_site_section_its_manifests_need(tmp_path: Path) -> None:
    from provisiond.manifests import ManifestService

    nodes = lab_nodes(2, openstack=True)
    assert [(n.hostname, n.firmware, n.memory_mib, n.cpus) for n in nodes] == [
        ("controller", "bios", 4096, 2), ("compute1", "bios", 2048, 1), ("compute2", "bios", 2048, 1)]
    assert [n.firmware for n in lab_nodes(2, ["compute1=uefi"], openstack=True)] == ["bios", "uefi", "bios"]
    (tmp_path / "bmc.pass").write_text("pw\n")
    path = tmp_path / "inventory.yaml"
    path.write_text(inventory_yaml(nodes, "image", str(tmp_path / "bmc.pass"), openstack=True))
    inventory = load_inventory(path)
    settings = inventory.site.openstack
    assert settings is not None
    assert (settings.virt_type, settings.workers, settings.cluster_check) == ("qemu", 1, True)
    assert settings.provider.interface == "ens3"  # e1000 on QEMU's pc machine (BIOS nodes)
    service = ManifestService(inventory)
    controller = [step["id"] for step in service.manifest(inventory.node("controller"), "http://x")["steps"]]
    assert controller.index("cells.discover-hosts") < controller.index("cluster.check") < controller.index(
        "openstack.configured")
    compute = [step["id"] for step in service.manifest(inventory.node("compute1"), "http://x")["steps"]]
    assert "compute.up" in compute and "cluster.check" not in compute
    # Without --openstack: no OpenStack section, the smaller machines.
    plain = load_inventory(_written(tmp_path, inventory_yaml(lab_nodes(2), "image", None)))
    assert plain.site.openstack is None
    assert [(n.memory_mib, n.cpus) for n in lab_nodes(2)] == [(2048, 1), (1024, 1), (1024, 1)]


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plain.yaml"
    path.write_text(text)
    return path


def test_the_lab_key_is_roots_authorized_key_on_every_node(tmp_path: Path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkZPx2IJy2r9eWQyMdjDx0lTDUU8yXdXdy6H9mP6sGv provisiond-lab"
    inventory = load_inventory(_written(tmp_path, inventory_yaml(lab_nodes(1), "image", None, ssh_key=key)))
    assert inventory.site.ssh_authorized_keys == [key]
    assert ssh_argv("/lab/ssh_key", "10.213.0.11", ["findmnt", "/x"])[-3:] == ["root@10.213.0.11", "findmnt", "/x"]
    assert "BatchMode=yes" in ssh_argv("/lab/ssh_key", "10.213.0.11")
