"""The deploy layout script: the storage model's third renderer (after kickstart and preseed).

The deploy ramdisk runs this POSIX shell script against the node's disk: it clears the disk,
partitions it with parted in exact byte bounds (msdos for BIOS, GPT with an ESP for UEFI), creates the PVs, VGs
and LVs with LVM's 4 MiB extents, makes every file system, mounts them under $TARGET and
writes $TARGET/etc/fstab by UUID. Every size comes from `provisiond.layouts.plan_layout`;
nothing here decides one.

The script is always exact: a disk of unknown size is planned at deploy time from the size
the ramdisk reports (`Layout.disk_mib` must be known here). Pure: text in, text out.
"""

from __future__ import annotations

import shlex

from provisiond.layouts import ALIGN_MIB, EBR_MIB, EXTENT_MIB, GPT_BACKUP_MIB, MIB, Layout, LogicalVolume, Partition

MKFS = {
    "ext4": "mkfs.ext4 -q -F",
    "xfs": "mkfs.xfs -q -f",
    "efi": "mkfs.vfat -F 32 -n EFI",
}
FSTAB_TYPE = {"efi": "vfat"}
FSTAB_OPTIONS = {"/": "errors=remount-ro", "/boot/efi": "umask=0077"}
# systemd waits 90 s for each fstab device by default; slow first boots (several TCG guests
# on shared cores: udev's coldplug took 173 s in the lab) dropped to emergency mode.
DEVICE_TIMEOUT = "x-systemd.device-timeout=600s"


def _q(value: str) -> str:
    return shlex.quote(value)


def partition_bounds(layout: Layout) -> dict[int, tuple[int, int]]:
    """(start, end) in MiB of every partition, as parted is told them: the first at 1 MiB,
    each next one right after; a logical partition 1 MiB (its EBR) into its extended one."""
    bounds: dict[int, tuple[int, int]] = {}
    position = ALIGN_MIB
    for part in layout.partitions:
        assert part.size_mib is not None, "the deploy script needs a planned disk size"
        if part.kind == "logical":
            extended = next(p for p in layout.partitions if p.kind == "extended")
            start = bounds[extended.number][0] + EBR_MIB
            bounds[part.number] = (start, start + part.size_mib)
            continue
        bounds[part.number] = (position, position + part.size_mib)
        position += part.size_mib
    return bounds


def _mkpart(layout: Layout, part: Partition, start: int, end: int) -> str:
    """One parted call: msdos takes a partition type, GPT a partition name."""
    if layout.label == "gpt":
        kind = {"efi": "ESP"}.get(part.fstype or "", part.vg or (part.mount or "data").strip("/") or "root")
    else:
        kind = part.kind
    fs = {"efi": "fat32", "ext4": "ext4", "xfs": "xfs"}.get(part.fstype or "", "")
    # Bytes, the end inclusive: exact in parted (a MiB end at the very end of the disk is
    # refused as "outside of the device" by parted's rounding).
    words = ["parted", "-s", "-a", "none", '"$DISK"', "unit", "B", "mkpart", _q(kind)]
    words += [fs] if fs else []
    words += [str(start * MIB), str(end * MIB - 1)]
    flag = None
    if part.fstype == "efi":
        flag = "esp"
    elif part.is_pv:
        flag = "lvm"
    elif part.mount == "/boot" and layout.label == "msdos":
        flag = "boot"
    if flag:
        words += ["set", str(part.number), flag, "on"]
    return " ".join(words)


def _lv_device(vg: str, lv: LogicalVolume) -> str:
    return f"/dev/{vg}/{lv.name}"


def _mounts(layout: Layout) -> list[tuple[str, str, str]]:
    """(device expression, mount point, fstype) of every mounted file system, parents first."""
    found = [(f'"$(part {p.number})"', p.mount, p.fstype or "") for p in layout.partitions if p.mount]
    found += [(_lv_device(vg.name, lv), lv.mount, lv.fstype)
              for vg in layout.volume_groups for lv in vg.logical_volumes if lv.mount]
    return sorted(found, key=lambda item: (item[1].count("/") - (item[1] == "/"), item[1]))


def render_layout_script(layout: Layout, hostname: str) -> str:
    """The shell script that lays out `layout` on $DISK (default /dev/<device>) under $TARGET."""
    if layout.disk_mib is None:
        raise ValueError("the deploy layout script needs the disk size (plan the layout with it)")
    bounds = partition_bounds(layout)
    need_mib = max(end for _, end in bounds.values()) + (GPT_BACKUP_MIB if layout.label == "gpt" else 0)
    lines = [
        "#!/bin/sh",
        f"# provisiond deploy layout for {hostname}: {layout.role} on {layout.device} "
        f"({layout.disk_mib} MiB), {layout.label} label.",
        "# Rendered from provisiond.layouts, the storage model the kickstart and preseed render too.",
        "# Run by the deploy ramdisk: DISK and TARGET may be overridden from the environment.",
        "set -eu",
        f"DISK=${{DISK:-/dev/{layout.device}}}",
        "TARGET=${TARGET:-/target}",
        'part() { case "$DISK" in *[0-9]) echo "${DISK}p$1" ;; *) echo "$DISK$1" ;; esac; }',
        'uuid() { blkid -s UUID -o value "$1"; }',
        'step() { echo "provisiond-layout: $*"; }',
        "",
        'have_mib=$(( $(blockdev --getsize64 "$DISK") / 1048576 ))',
        f'if [ "$have_mib" -lt {need_mib} ]; then',
        f'    echo "provisiond-layout: $DISK has $have_mib MiB; the {layout.role} layout needs {need_mib} MiB" >&2',
        "    exit 2",
        "fi",
        "",
        'step "clear $DISK"',
        "vgchange -an >/dev/null 2>&1 || true",
        'for dev in $(lsblk -lnpo NAME "$DISK" | tac); do wipefs -a -q "$dev"; done',
        "",
        f'step "partition: {layout.label} label"',
        f'parted -s -a none "$DISK" mklabel {layout.label}',
    ]
    for part in layout.partitions:
        start, end = bounds[part.number]
        lines.append(_mkpart(layout, part, start, end))
    lines += ["", 'step "LVM: physical volumes, volume groups, logical volumes"']
    for vg in layout.volume_groups:
        pv = layout.partition(vg.pv)
        lines.append(f'pvcreate -q -ff -y "$(part {pv.number})"')
        lines.append(f'vgcreate -q -s {EXTENT_MIB}M {_q(vg.name)} "$(part {pv.number})"')
        for lv in vg.logical_volumes:
            lines.append(f"lvcreate -q -y -L {lv.size_mib}M -n {_q(lv.name)} {_q(vg.name)}")
    lines += ["", 'step "file systems"']
    for part in layout.partitions:
        if part.fstype:
            lines.append(f'{MKFS[part.fstype]} "$(part {part.number})"')
    for vg in layout.volume_groups:
        for lv in vg.logical_volumes:
            device = _lv_device(vg.name, lv)
            lines.append(f"mkswap {device}" if lv.is_swap else f"{MKFS[lv.fstype]} {device}")
    lines += ["", 'step "mount under $TARGET"']
    for device, mount, _ in _mounts(layout):
        target = '"$TARGET"' if mount == "/" else f'"$TARGET"{_q(mount)}'
        if mount != "/":
            lines.append(f"mkdir -p {target}")
        lines.append(f"mount {device} {target}")
    lines += ["", 'step "fstab by UUID"', 'mkdir -p "$TARGET/etc"', "cat > \"$TARGET/etc/fstab\" <<EOF",
              f"# provisiond: {layout.role} layout on {layout.device}, by UUID"]
    for device, mount, fstype in _mounts(layout):
        passno = 1 if mount in ("/", "/boot/efi") else 2
        options = f"{FSTAB_OPTIONS.get(mount, 'defaults')},{DEVICE_TIMEOUT}"
        lines.append(f"UUID=$(uuid {device}) {mount} {FSTAB_TYPE.get(fstype, fstype)} {options} 0 {passno}")
    for vg in layout.volume_groups:
        for lv in vg.logical_volumes:
            if lv.is_swap:
                lines.append(f"UUID=$(uuid {_lv_device(vg.name, lv)}) none swap sw,{DEVICE_TIMEOUT} 0 0")
    lines += ["EOF", 'step "done"', ""]
    return "\n".join(lines)
