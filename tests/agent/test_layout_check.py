"""The layout check against real disk facts: lsblk/vgs/lvs/findmnt JSON captured from a real
LVM system (Debian 12's kernel under QEMU, the compute storage model laid out on a 40 GiB
virtio disk, captured by tests/tools/capture-layout-facts.py with the agent's own commands)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from provisiond.layouts import plan_layout
from provisiond.roles.layout_check import LayoutFactsError, check_layout

DATA = Path(__file__).resolve().parent / "data"
COMPUTE = plan_layout("compute", 40 * 1024**3, device="vda")


def captured(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_a_real_compute_node_matches_its_model():
    facts = captured("compute-vda-40GiB.json")
    assert {vg["vg_name"] for vg in facts["vgs"]["report"][0]["vg"]} == {"vg_base", "vg_gluster"}
    assert check_layout(COMPUTE, facts) == []


def test_a_real_node_without_vg_gluster_is_named():
    problems = check_layout(COMPUTE, captured("compute-vda-40GiB-no-vg_gluster.json"))
    assert problems == [
        "volume group vg_gluster is missing (the compute model puts it on vda3; found: vg_base)",
    ]


def test_the_controller_model_names_its_own_volumes():
    controller = plan_layout("controller", 80 * 10**9, device="vda")
    problems = check_layout(controller, captured("compute-vda-40GiB.json"))
    assert any(p.startswith("volume group nova-volumes is missing") for p in problems)
    assert any(p.startswith("volume group vg_images is missing") for p in problems)


def test_a_wrong_file_system_and_a_missing_mount_are_named():
    facts = copy.deepcopy(captured("compute-vda-40GiB.json"))

    def walk(items):
        for item in items:
            yield item
            yield from walk(item.get("children", []))

    mounts = list(walk(facts["findmnt"]["filesystems"]))
    next(m for m in mounts if m["target"] == "/export/gluster")["fstype"] = "ext4"
    next(m for m in mounts if m["target"] == "/home")["target"] = "/srv"
    problems = check_layout(COMPUTE, facts)
    assert problems == [
        "/home is not mounted (the compute model has logical volume vg_base/lv_home there, ext4)",
        "/export/gluster is ext4, the compute model says xfs (logical volume vg_gluster/lv_gluster)",
    ]


def test_facts_that_are_not_the_tools_json_are_refused():
    with pytest.raises(LayoutFactsError, match="vgs: expected LVM JSON"):
        check_layout(COMPUTE, {"lsblk": {"blockdevices": []}, "vgs": {}, "lvs": {}, "findmnt": {}})
