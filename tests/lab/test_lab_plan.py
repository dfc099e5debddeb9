"""The lab's plan (pure): nodes, firmware choices, the inventory it writes, phase times."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.errors import UserError
from provisiond.inventory import load_inventory
from provisiond.lab.plan import inventory_yaml, lab_nodes, parse_firmware_choices, phase_times


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
