"""The layout check: a node's real disk facts (lsblk, vgs, lvs, findmnt as JSON) against its
role's storage model. Pure; the agent gathers the facts, the server calls this.

Checked: every volume group and logical volume of the model exists, every mount point of the
model is mounted with the model's file-system type, and swap volumes are swap. Sizes are not
compared: installers round them (partman to MB, LVM to extents) and a grown volume is right.
"""

from __future__ import annotations

from typing import Any

from provisiond.layouts import Layout

# The model's names for file systems -> what lsblk/findmnt call them.
FSTYPE_NAMES = {"efi": "vfat"}


class LayoutFactsError(ValueError):
    """The facts are not lsblk/vgs/lvs/findmnt JSON; the message says which part is wrong."""


def _report_rows(facts: dict[str, Any], tool: str, key: str) -> list[dict[str, Any]]:
    """Rows of an LVM JSON report ({"report": [{"vg": [...]}]})."""
    try:
        return [row for report in facts[tool]["report"] for row in report[key]]
    except (KeyError, TypeError) as exc:
        raise LayoutFactsError(f"{tool}: expected LVM JSON ({{\"report\": [{{\"{key}\": [...]}}]}}), "
                               f"missing {exc}") from None


def _mounts(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """findmnt's tree flattened: target -> {source, fstype}."""
    found: dict[str, dict[str, Any]] = {}

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            found.setdefault(item["target"], item)
            walk(item.get("children", []))

    try:
        walk(facts["findmnt"]["filesystems"])
    except (KeyError, TypeError) as exc:
        raise LayoutFactsError(f"findmnt: expected findmnt --json output, missing {exc}") from None
    return found


def _block_devices(facts: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            found.append(item)
            walk(item.get("children", []))

    try:
        walk(facts["lsblk"]["blockdevices"])
    except (KeyError, TypeError) as exc:
        raise LayoutFactsError(f"lsblk: expected lsblk --json output, missing {exc}") from None
    return found


def check_layout(layout: Layout, facts: dict[str, Any]) -> list[str]:
    """Problems found (empty: the node matches its model), each naming the volume or mount."""
    problems: list[str] = []
    vgs = {row["vg_name"] for row in _report_rows(facts, "vgs", "vg")}
    lvs = {(row["vg_name"], row["lv_name"]) for row in _report_rows(facts, "lvs", "lv")}
    mounts = _mounts(facts)
    # Active swap shows as lsblk's mount point [SWAP] (from /proc/swaps); FSTYPE needs udev's
    # database, which a node may lack.
    swaps = {(dev.get("name") or "") for dev in _block_devices(facts)
             if dev.get("fstype") == "swap" or "[SWAP]" in (dev.get("mountpoints") or [dev.get("mountpoint")])}

    def check_mount(path: str, fstype: str, what: str) -> None:
        expected = FSTYPE_NAMES.get(fstype, fstype)
        mounted = mounts.get(path)
        if mounted is None:
            problems.append(f"{path} is not mounted (the {layout.role} model has {what} there, {expected})")
        elif mounted.get("fstype") != expected:
            problems.append(f"{path} is {mounted.get('fstype')}, the {layout.role} model says {expected} ({what})")

    for part in layout.data_partitions:
        if part.mount and part.fstype:
            check_mount(part.mount, part.fstype, f"partition {part.name}")
    for vg in layout.volume_groups:
        if vg.name not in vgs:
            problems.append(f"volume group {vg.name} is missing (the {layout.role} model puts it on "
                            f"{vg.pv}; found: {', '.join(sorted(vgs)) or 'none'})")
            continue
        for lv in vg.logical_volumes:
            if (vg.name, lv.name) not in lvs:
                problems.append(f"logical volume {vg.name}/{lv.name} is missing")
                continue
            if lv.is_swap:
                mapper = f"{vg.name.replace('-', '--')}-{lv.name.replace('-', '--')}"
                if mapper not in swaps:
                    problems.append(f"{vg.name}/{lv.name} is not a swap volume")
            elif lv.mount:
                check_mount(lv.mount, lv.fstype, f"logical volume {vg.name}/{lv.name}")
    return problems
