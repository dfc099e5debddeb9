"""The deploy layout script (the storage model's third renderer).

The script is run for real by `sh` here, with the disk tools replaced by recorders (the host
kernel has no device-mapper, so LVM cannot run here; the full install test runs it for real
inside a VM). What the script told parted, LVM and mkfs is turned back into a layout table,
which must be the storage model's, Tables 2 and 3 exact on the paper's disks, and the same
layout the kickstart and preseed renderers say (each parsed by its installer's own parser).
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PAPER_COMPUTE_DISK, SITE_YAML, require_program
from test_layouts import TABLE_2, TABLE_3
from test_render_kickstart import parse as parse_kickstart
from test_render_preseed import decode, preseed_values, recipes_sh  # noqa: F401 (a fixture)

from provisiond.cli import main
from provisiond.errors import UserError
from provisiond.images.layout_script import partition_bounds, render_layout_script
from provisiond.inventory import load_inventory
from provisiond.layouts import MIB, partition_name, plan_layout, vg_capacity
from provisiond.render import MB_PER_MIB, Renderer

NODES = """\
nodes:
  - {hostname: compute1, mac: "52:54:00:10:00:11", role: compute, ip: 10.213.0.11, disk: {size: COMPUTE_DISK}}
  - {hostname: controller, mac: "52:54:00:10:00:10", role: controller, ip: 10.213.0.10, disk: {size: 80G}}
  - {hostname: compute-uefi, mac: "52:54:00:10:00:25", role: compute, ip: 10.213.0.25, firmware: uefi,
     disk: {device: nvme0n1, size: 250G}}
  - {hostname: controller-uefi, mac: "52:54:00:10:00:26", role: controller, ip: 10.213.0.26, firmware: uefi,
     disk: {size: 80G}}
  - {hostname: compute-40g, mac: "52:54:00:10:00:21", role: compute, ip: 10.213.0.21, disk: {device: vda, size: 40G}}
  - {hostname: compute-any, mac: "52:54:00:10:00:23", role: compute, ip: 10.213.0.23}
""".replace("COMPUTE_DISK", str(PAPER_COMPUTE_DISK))
BOTH_ROLES_BOTH_FIRMWARES = ["compute1", "controller", "compute-uefi", "controller-uefi"]
RECORDED = ["blockdev", "lsblk", "wipefs", "vgchange", "parted", "pvcreate", "vgcreate", "lvcreate",
            "mkfs.ext4", "mkfs.xfs", "mkfs.vfat", "mkswap", "mount", "blkid"]
# Every disk tool is recorded; parted also runs for real when $DISK is a (sparse) file.
RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$RECORD"
case "$(basename "$0")" in
  blockdev) echo "$DISK_BYTES" ;;
  lsblk) echo "$DISK" ;;
  blkid) echo "uuid-of-$(echo "$5" | tr / _)" ;;
  parted) [ -f "$DISK" ] && exec "$REAL_PARTED" "$@" ;;
esac
exit 0
"""


@pytest.fixture
def inventory(write_inventory):
    return load_inventory(write_inventory(SITE_YAML + NODES))


def run_recorded(script: str, tmp_path: Path, device: str, disk_bytes: int,
                 disk_file: Path | None = None) -> tuple[subprocess.CompletedProcess, list[list[str]], Path]:
    """Run the script with `sh`, disk tools recorded instead of run (parted for real on
    `disk_file` when given); (result, calls, target)."""
    bin_dir, target = tmp_path / "bin", tmp_path / "target"
    bin_dir.mkdir(parents=True, exist_ok=True)
    target.mkdir(exist_ok=True)
    recorder = bin_dir / "recorder"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    for name in RECORDED:
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to(recorder)
    record = tmp_path / "record"
    record.write_text("")
    path = tmp_path / "layout.sh"
    path.write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(record), "DISK_BYTES": str(disk_bytes),
           "DISK": str(disk_file) if disk_file else f"/dev/{device}", "TARGET": str(target),
           "REAL_PARTED": shutil.which("parted", path="/usr/sbin:/sbin:/usr/bin") or "parted"}
    result = subprocess.run(["sh", str(path)], capture_output=True, text=True, env=env, timeout=60)
    calls = [shlex.split(line) for line in record.read_text().splitlines()]
    return result, calls, target


def table_from_calls(calls: list[list[str]], device: str, target: Path, disk: str | None = None) -> dict:
    """The layout the script made, in the shape of partition-tables.yaml, from the tool calls."""
    disk = disk or f"/dev/{device}"
    label, parts, next_number = None, {}, 1
    by_device: dict[str, int] = {}
    pvs, vgs, fstypes, mounts = {}, {}, {}, {}
    for call in calls:
        tool, args = call[0], call[1:]
        if tool == "parted" and "mklabel" in args:
            label = args[args.index("mklabel") + 1]
        elif tool == "parted" and "mkpart" in args:
            assert args[args.index("unit") + 1] == "B"
            words = args[args.index("mkpart") + 1:]
            numbers = [w for w in words if w.isdigit()]
            start, end = int(numbers[0]), int(numbers[1]) + 1  # parted's end byte is inclusive
            assert start % MIB == 0 and end % MIB == 0, (start, end)
            start, end = start // MIB, end // MIB
            kind = words[0] if label == "msdos" else "primary"
            number = max(next_number, 5) if kind == "logical" else next_number
            next_number = number + 1
            flags = words[words.index("set") + 1:] if "set" in words else []
            parts[number] = {"kind": kind, "size": end - start, "flags": flags}
            by_device[partition_device(disk, number)] = number
        elif tool == "pvcreate":
            pvs[args[-1]] = None
        elif tool == "vgcreate":
            assert args[args.index("-s") + 1] == "4M"
            vgs[args[-2]] = {"pv": by_device[args[-1]], "lvs": []}
            pvs[args[-1]] = args[-2]
        elif tool == "lvcreate":
            size = args[args.index("-L") + 1]
            assert size.endswith("M")
            vgs[args[-1]]["lvs"].append({"name": args[args.index("-n") + 1], "size": int(size[:-1])})
        elif tool.startswith("mkfs.") or tool == "mkswap":
            fstypes[args[-1]] = {"mkfs.vfat": "efi", "mkswap": "swap"}.get(tool, tool.removeprefix("mkfs."))
        elif tool == "mount":
            mounts[args[0]] = args[1].removeprefix(str(target)) or "/"

    partitions = []
    for number, part in sorted(parts.items()):
        dev = partition_device(disk, number)
        row: dict = {"name": partition_name(device, number), "size": part["size"]}
        if part["kind"] == "extended":
            row["type"] = "extended"
        elif dev in pvs:
            assert part["flags"] == [str(number), "lvm", "on"]
            row["pv_of"] = pvs[dev]
        else:
            row.update(mount=mounts[dev], fstype=fstypes[dev])
        if part["kind"] == "logical":
            row["logical"] = True
        partitions.append(row)
    groups = {}
    for name, vg in vgs.items():
        size = vg_capacity(parts[vg["pv"]]["size"])  # LVM's rule: 1 MiB metadata, 4 MiB extents
        entry: dict = {"size": size}
        free = size - sum(lv["size"] for lv in vg["lvs"])
        if free:
            entry["free"] = free
        entry["logical_volumes"] = []
        for lv in vg["lvs"]:
            dev = f"/dev/{name}/{lv['name']}"
            entry["logical_volumes"].append(
                {"name": lv["name"], "size": lv["size"]} | ({"mount": mounts[dev]} if dev in mounts else {})
                | {"fstype": fstypes[dev]})
        groups[name] = entry
    return {"disk": device, "partitions": partitions, "volume_groups": groups, "label": label}


def partition_device(disk: str, number: int) -> str:
    """What the script's part() helper says: /dev/sda1, /dev/nvme0n1p1."""
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def deploy_table(inventory, tmp_path: Path, host: str) -> tuple[dict, Path]:
    node = inventory.node(host)
    script = Renderer(inventory).deploy_script(node)
    result, calls, target = run_recorded(script, tmp_path, node.disk.device, node.disk.size_bytes)
    assert result.returncode == 0, result.stderr
    return table_from_calls(calls, node.disk.device, target), target


@pytest.mark.parametrize("host", [*BOTH_ROLES_BOTH_FIRMWARES, "compute-40g"])
def test_script_makes_the_models_layout(inventory, tmp_path, host):
    node = inventory.node(host)
    layout = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
    table, _ = deploy_table(inventory, tmp_path, host)
    assert table.pop("label") == ("gpt" if node.uefi else "msdos")
    assert table == layout.as_table()


def test_tables_2_and_3_exact(inventory, tmp_path):
    table, _ = deploy_table(inventory, tmp_path / "c", "compute1")
    table.pop("label")
    assert table == TABLE_2
    table, _ = deploy_table(inventory, tmp_path / "k", "controller")
    table.pop("label")
    expected = yaml.safe_load(yaml.safe_dump(TABLE_3))
    expected["partitions"][4]["size"] = 28791  # the paper's one impossible figure (docs/layouts.md)
    assert table == expected


@pytest.mark.parametrize("host", BOTH_ROLES_BOTH_FIRMWARES)
def test_fstab_by_uuid_mounts_every_file_system(inventory, tmp_path, host):
    node = inventory.node(host)
    layout = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
    _, target = deploy_table(inventory, tmp_path, host)
    rows = [line.split() for line in (target / "etc/fstab").read_text().splitlines() if not line.startswith("#")]
    assert all(row[0].startswith("UUID=uuid-of-_dev_") for row in rows), rows
    by_mount = {row[1]: row for row in rows}
    for vg in layout.volume_groups:
        for lv in vg.logical_volumes:
            row = by_mount["none" if lv.is_swap else lv.mount]
            assert row[0] == f"UUID=uuid-of-_dev_{vg.name}_{lv.name}"
            assert row[2] == lv.fstype
    boot = layout.partition(partition_name(node.disk.device, 2 if node.uefi else 1))
    assert by_mount["/boot"][0] == f"UUID=uuid-of-_dev_{boot.name}" and by_mount["/boot"][2] == "ext4"
    if node.uefi:
        assert by_mount["/boot/efi"][2] == "vfat"
        assert by_mount["/"][5] == "1" and by_mount["/boot/efi"][5] == "1"
    else:
        assert "/boot/efi" not in by_mount
    assert len(rows) == len(by_mount)
    assert all("x-systemd.device-timeout=600s" in row[3].split(",") for row in rows)  # slow first boots


def test_esp_on_gpt_and_boot_flag_on_msdos(inventory):
    uefi = Renderer(inventory).deploy_script(inventory.node("compute-uefi"))
    assert 'parted -s -a none "$DISK" mklabel gpt' in uefi
    assert f'mkpart ESP fat32 {MIB} {513 * MIB - 1} set 1 esp on' in uefi
    assert "mkfs.vfat -F 32" in uefi
    bios = Renderer(inventory).deploy_script(inventory.node("compute1"))
    assert 'mklabel msdos' in bios and f'mkpart primary ext4 {MIB} {501 * MIB - 1} set 1 boot on' in bios
    assert "mkfs.vfat" not in bios and "esp" not in bios


def test_a_disk_smaller_than_the_layout_fails_before_touching_it(inventory, tmp_path):
    node = inventory.node("compute1")
    script = Renderer(inventory).deploy_script(node)
    result, calls, _ = run_recorded(script, tmp_path, "sda", 100 * 10**9)
    assert result.returncode == 2
    assert "/dev/sda has 95367 MiB; the compute layout needs 238475 MiB" in result.stderr
    assert [call[0] for call in calls] == ["blockdev"]  # nothing written


def test_disk_of_unknown_size_is_planned_for_the_size_given(inventory, tmp_path):
    node = inventory.node("compute-any")
    with pytest.raises(UserError, match=r"disk\.size is not in the inventory; the deploy ramdisk sends"):
        Renderer(inventory).deploy_script(node)
    script = Renderer(inventory).deploy_script(node, 40 * 10**9)
    result, calls, target = run_recorded(script, tmp_path, "sda", 40 * 10**9)
    assert result.returncode == 0, result.stderr
    table = table_from_calls(calls, "sda", target)
    table.pop("label")
    assert table == plan_layout("compute", 40 * 10**9).as_table()


def test_render_deploy_command(inventory, capsys):
    assert main(["--inventory", str(inventory.path), "render", "deploy", "compute1"]) == 0
    assert capsys.readouterr().out == Renderer(inventory).deploy_script(inventory.node("compute1"))
    assert main(["--inventory", str(inventory.path), "render", "deploy", "compute-any", "--disk-size", "40G"]) == 0
    assert "lvcreate -q -y -L" in capsys.readouterr().out
    assert main(["--inventory", str(inventory.path), "render", "deploy", "compute-any"]) == 1
    assert "--disk-size 250G" in capsys.readouterr().err
    assert main(["--inventory", str(inventory.path), "render", "deploy", "compute-any", "--disk-size", "lots"]) == 1
    assert "--disk-size:" in capsys.readouterr().err
    assert main(["--inventory", str(inventory.path), "render", "deploy", "compute-any", "--disk-size", "10G"]) == 1
    assert "disk too small for the compute layout" in capsys.readouterr().err


def test_renderer_refuses_an_unplanned_layout():
    with pytest.raises(ValueError, match="needs the disk size"):
        render_layout_script(plan_layout("compute", None), "x")


# --- The three renderers agree -------------------------------------------------------------

def common_form(partitions: list[dict], groups: dict) -> dict:
    """What all three renderers can say: partitions in order (size, what they hold; not the
    msdos extended container, which kickstart and partman make by themselves), VGs with LVs."""
    return {"partitions": partitions, "volume_groups": groups}


def from_deploy(table: dict) -> dict:
    partitions = [
        {"size": row["size"], "vg": row["pv_of"]} if "pv_of" in row
        else {"size": row["size"], "fstype": row["fstype"], "mount": row["mount"]}
        for row in table["partitions"] if row.get("type") != "extended"
    ]
    groups = {name: [(lv["name"], lv["size"], lv["fstype"], lv.get("mount")) for lv in vg["logical_volumes"]]
              for name, vg in table["volume_groups"].items()}
    return common_form(partitions, groups)


def from_kickstart(text: str) -> dict:
    handler = parse_kickstart(text).handler
    vg_of = {pv: vg.vgname for vg in handler.volgroup.vgList for pv in vg.physvols}
    partitions = [
        {"size": p.size, "vg": vg_of[p.mountpoint]} if p.mountpoint.startswith("pv.")
        else {"size": p.size, "fstype": p.fstype, "mount": p.mountpoint}
        for p in handler.partition.partitions
    ]
    groups = {vg.vgname: [] for vg in handler.volgroup.vgList}
    for lv in handler.logvol.lvList:
        swap = lv.mountpoint == "swap"
        groups[lv.vgname].append((lv.name, lv.size, "swap" if swap else lv.fstype, None if swap else lv.mountpoint))
    return common_form(partitions, groups)


def from_preseed(items: list[dict]) -> dict:
    def mib(mb: int) -> int:  # partman's MB back to the model's MiB (the renderer rounded down)
        return math.ceil(mb / MB_PER_MIB)

    partitions, groups = [], {}
    for item in items:
        if "in_vg" in item:
            continue
        if item["method"] == "lvm":
            partitions.append({"size": mib(item["min"]), "vg": item["vg_name"]})
            groups[item["vg_name"]] = []
        elif item["method"] == "efi":
            partitions.append({"size": mib(item["min"]), "fstype": "efi", "mount": "/boot/efi"})
        else:
            partitions.append({"size": mib(item["min"]), "fstype": item["filesystem"], "mount": item["mountpoint"]})
    for item in items:
        if "in_vg" in item:
            swap = item["method"] == "swap"
            groups[item["in_vg"]].append((item["lv_name"], mib(item["min"]), "swap" if swap else item["filesystem"],
                                          None if swap else item["mountpoint"]))
    return common_form(partitions, groups)


@pytest.mark.parametrize("host", BOTH_ROLES_BOTH_FIRMWARES)
def test_three_renderers_say_the_same_layout(inventory, recipes_sh, tmp_path, host):  # noqa: F811
    node = inventory.node(host)
    renderer = Renderer(inventory)
    deploy, _ = deploy_table(inventory, tmp_path, host)
    kickstart = from_kickstart(renderer.kickstart(node))
    values = preseed_values(renderer.preseed(node))
    _, items = decode(recipes_sh, tmp_path, values["d-i partman-auto/expert_recipe"], deploy["label"])
    preseed = from_preseed(items)
    assert from_deploy(deploy) == kickstart == preseed
    if host == "compute1":
        assert from_deploy(deploy) == from_deploy(TABLE_2)


@pytest.mark.parametrize("host", ["compute-40g", "controller", "controller-uefi", "compute-uefi"])
def test_real_parted_makes_the_models_partitions_on_a_disk_file(inventory, tmp_path, host):
    """parted runs for real on a sparse file of the node's disk size (the very end of the disk
    included); the partition table it wrote is read back with sfdisk and compared."""
    require_program("parted")
    sfdisk = require_program("sfdisk")
    node = inventory.node(host)
    layout = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
    disk = tmp_path / "disk.img"
    with disk.open("wb") as handle:
        handle.truncate(node.disk.size_bytes)
    script = Renderer(inventory).deploy_script(node)
    result, _, _ = run_recorded(script, tmp_path, node.disk.device, node.disk.size_bytes, disk_file=disk)
    assert result.returncode == 0, result.stderr
    table = json.loads(subprocess.run([sfdisk, "--json", str(disk)], capture_output=True, text=True,
                                      check=True, timeout=30).stdout)["partitiontable"]
    assert table["label"] == ("gpt" if node.uefi else "dos")
    sector = table.get("sectorsize", 512)
    got = {int(p["node"].removeprefix(str(disk))): (p["start"] * sector // MIB, p["size"] * sector // MIB)
           for p in table["partitions"]}
    expected = {number: (start, end - start) for number, (start, end) in partition_bounds(layout).items()}
    assert got == expected
    bounds = [(p["start"], p["start"] + p["size"]) for p in table["partitions"]]
    assert max(end for _, end in bounds) * sector <= node.disk.size_bytes - (MIB if node.uefi else 0)


def test_sizes_are_whole_mib(inventory):
    """parted is told exact bytes (whole MiB, end inclusive); the disk check counts whole MiB."""
    script = Renderer(inventory).deploy_script(inventory.node("compute1"))
    assert "unit B mkpart" in script
    assert f"-lt {PAPER_COMPUTE_DISK // MIB}" in script
