"""The storage model: role -> disk -> partitions -> volume groups -> logical volumes.

One model, rendered to kickstart (`part`/`volgroup`/`logvol`) and to a partman-auto expert
recipe by the templates. It reproduces Tables 2 and 3 of the seed report on the paper's disks
and scales to any other disk by one rule (docs/layouts.md):

1. The first partition starts at 1 MiB. UEFI nodes get a GPT label with a 512 MiB EFI system
   partition first and 1 MiB kept free at the end for the backup GPT; BIOS nodes an msdos label.
2. System volumes are fixed: /boot 500 MiB ext4; the vg_base PV (compute 21000 MiB,
   controller 17000 MiB) holding lv_root 10000 MiB (/), lv_swap (compute 6000, controller
   2000) and lv_home taking the rest of vg_base.
3. The rest of the disk goes to the role's data volume groups:
   compute: all of it to vg_gluster, whose lv_gluster (XFS, /export/gluster) fills it;
   controller: half of it, rounded up to a whole 1000 MiB, to nova-volumes (no logical
   volumes: the block-storage service allocates them), the remainder to vg_images, whose
   lv_images (/var/lib/glance/images) fills it. On msdos the fifth partition is a logical
   partition inside an extended one, which begins with a 1 MiB EBR.
4. LVM keeps 1 MiB of metadata at the start of each PV and allocates 4 MiB extents, so a
   volume group holds floor((PV - 1 MiB) / 4 MiB) extents.
5. Each data volume group must get at least DATA_VG_MIN_MIB; a smaller disk is refused with
   the size it would need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
EXTENT_MIB = 4
PV_METADATA_MIB = 1
ALIGN_MIB = 1
EBR_MIB = 1
ESP_MIB = 512
GPT_BACKUP_MIB = 1
BOOT_MIB = 500
ROOT_MIB = 10000
DATA_VG_MIN_MIB = 4096

ROLE_SYSTEM = {
    # role: (vg_base PV size, swap size) in MiB, from Tables 2 and 3
    "compute": (21000, 6000),
    "controller": (17000, 2000),
}


class LayoutError(ValueError):
    """A layout cannot be made (disk too small, unknown role); the message says what is needed."""


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    size_mib: int | None  # None: fills its volume group (disk size unknown at render time)
    fstype: str
    mount: str | None = None
    grow: bool = False  # takes the rest of its volume group

    @property
    def is_swap(self) -> bool:
        return self.fstype == "swap"


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    pv: str  # the partition that is its physical volume
    size_mib: int | None
    logical_volumes: tuple[LogicalVolume, ...] = ()

    @property
    def free_mib(self) -> int | None:
        if self.size_mib is None:
            return None
        return self.size_mib - sum(lv.size_mib or 0 for lv in self.logical_volumes)


@dataclass(frozen=True)
class Partition:
    number: int
    name: str  # sda1, nvme0n1p1
    size_mib: int | None
    kind: str = "primary"  # primary | extended | logical
    fstype: str | None = None  # ext4, xfs, efi, or None for a PV / extended partition
    mount: str | None = None
    vg: str | None = None  # the volume group this partition is a PV of
    grow: bool = False  # takes the rest of the disk (shared evenly when the size is unknown)
    min_mib: int | None = None  # the least it may get when growing

    @property
    def is_pv(self) -> bool:
        return self.vg is not None


@dataclass(frozen=True)
class Layout:
    role: str
    device: str
    disk_mib: int | None
    label: str  # msdos | gpt
    partitions: tuple[Partition, ...]
    volume_groups: tuple[VolumeGroup, ...] = field(default=())

    def volume_group(self, name: str) -> VolumeGroup:
        return next(vg for vg in self.volume_groups if vg.name == name)

    def partition(self, name: str) -> Partition:
        return next(part for part in self.partitions if part.name == name)

    @property
    def data_partitions(self) -> tuple[Partition, ...]:
        """Partitions that hold file systems or PVs (not the extended container)."""
        return tuple(part for part in self.partitions if part.kind != "extended")

    def as_table(self) -> dict[str, Any]:
        """The layout in the shape of shared/reference/partition-tables.yaml (sizes in MiB)."""
        partitions: list[dict[str, Any]] = []
        for part in self.partitions:
            row: dict[str, Any] = {"name": part.name, "size": part.size_mib}
            if part.kind == "extended":
                row["type"] = "extended"
            elif part.vg:
                row["pv_of"] = part.vg
            else:
                row.update(mount=part.mount, fstype=part.fstype)
            if part.kind == "logical":
                row["logical"] = True
            partitions.append(row)
        groups: dict[str, Any] = {}
        for vg in self.volume_groups:
            entry: dict[str, Any] = {"size": vg.size_mib}
            if vg.free_mib:
                entry["free"] = vg.free_mib
            entry["logical_volumes"] = [
                {"name": lv.name, "size": lv.size_mib}
                | ({"mount": lv.mount} if lv.mount else {})
                | {"fstype": lv.fstype}
                for lv in vg.logical_volumes
            ]
            groups[vg.name] = entry
        return {"disk": self.device, "partitions": partitions, "volume_groups": groups}


def vg_capacity(pv_mib: int) -> int:
    """Usable MiB of a volume group on one PV: whole 4 MiB extents after 1 MiB of metadata."""
    return (pv_mib - PV_METADATA_MIB) // EXTENT_MIB * EXTENT_MIB


def partition_name(device: str, number: int) -> str:
    """sda -> sda1; nvme0n1 / mmcblk0 (names ending in a digit) -> nvme0n1p1."""
    base = device.rsplit("/", 1)[-1]
    return f"{base}p{number}" if base[-1:].isdigit() else f"{base}{number}"


def _data_split(role: str, rest_mib: int, logical_last: bool) -> list[int]:
    """How the rest of the disk is shared among the role's data volume groups (PV sizes).

    The controller's nova-volumes gets half, rounded up to a whole 1000 MiB, but never so
    much that vg_images would fall below its minimum.
    """
    if role == "compute":
        return [rest_mib]
    images_least = DATA_VG_MIN_MIB + PV_METADATA_MIB + (EBR_MIB if logical_last else 0)
    half_up = -(-rest_mib // 2 // 1000) * 1000
    nova = max(DATA_VG_MIN_MIB + PV_METADATA_MIB, min(half_up, rest_mib - images_least))
    return [nova, rest_mib - nova]


def _check_data_room(role: str, pv_sizes: list[int], logical_last: bool) -> bool:
    usable = list(pv_sizes)
    if logical_last:
        usable[-1] -= EBR_MIB
    return all(vg_capacity(size) >= DATA_VG_MIN_MIB for size in usable)


def _fixed_mib(role: str, uefi: bool) -> int:
    base_pv, _ = ROLE_SYSTEM[role]
    overhead = ALIGN_MIB + (ESP_MIB + GPT_BACKUP_MIB if uefi else 0)
    return overhead + BOOT_MIB + base_pv


def minimum_disk_mib(role: str, uefi: bool = False) -> int:
    """The smallest disk (MiB) on which the role's layout fits with its data minimums."""
    fixed = _fixed_mib(role, uefi)
    logical_last = role == "controller" and not uefi
    low, high = 0, 64 * DATA_VG_MIN_MIB
    while low < high:  # smallest rest for which every data VG reaches its minimum
        middle = (low + high) // 2
        if _check_data_room(role, _data_split(role, middle, logical_last), logical_last):
            high = middle
        else:
            low = middle + 1
    return fixed + low


def plan_layout(role: str, disk_bytes: int | None, device: str = "sda", uefi: bool = False) -> Layout:
    """Lay out the role's partitions and volumes on a disk of `disk_bytes` (None: unknown).

    With an unknown size the data partitions and their last logical volumes grow to fill
    the disk at install time (evenly shared on the controller); everything else is exact.
    """
    if role not in ROLE_SYSTEM:
        raise LayoutError(f"no layout for role {role!r} (known: {', '.join(sorted(ROLE_SYSTEM))})")
    base_pv, swap = ROLE_SYSTEM[role]
    label = "gpt" if uefi else "msdos"
    logical_last = role == "controller" and not uefi

    disk_mib = None if disk_bytes is None else disk_bytes // MIB
    data_pvs: list[int | None]
    if disk_mib is None:
        data_pvs = [None] * len(_data_split(role, 0, logical_last))
    else:
        needed = minimum_disk_mib(role, uefi)
        if disk_mib < needed:
            raise LayoutError(
                f"disk too small for the {role} layout: it needs at least {needed} MiB "
                f"({needed * MIB / 1e9:.1f} GB), the disk has {disk_mib} MiB "
                f"({disk_bytes / 1e9:.1f} GB)"
            )
        data_pvs = list(_data_split(role, disk_mib - _fixed_mib(role, uefi), logical_last))

    partitions: list[Partition] = []
    number = 0

    def add(size: int | None, **kwargs: Any) -> Partition:
        nonlocal number
        number += 1
        part = Partition(number=number, name=partition_name(device, number), size_mib=size, **kwargs)
        partitions.append(part)
        return part

    if uefi:
        add(ESP_MIB, fstype="efi", mount="/boot/efi")
    add(BOOT_MIB, fstype="ext4", mount="/boot")
    base = add(base_pv, vg="vg_base")

    base_vg_size = vg_capacity(base_pv)
    groups = [
        VolumeGroup(
            "vg_base", base.name, base_vg_size,
            (
                LogicalVolume("lv_root", ROOT_MIB, "ext4", "/"),
                LogicalVolume("lv_swap", swap, "swap"),
                LogicalVolume("lv_home", base_vg_size - ROOT_MIB - swap, "ext4", "/home", grow=True),
            ),
        )
    ]

    def data_vg(pv: Partition, size: int | None, name: str, lv: tuple[str, str, str] | None) -> None:
        capacity = None if size is None else vg_capacity(size)
        volumes = () if lv is None else (LogicalVolume(lv[0], capacity, lv[2], lv[1], grow=True),)
        groups.append(VolumeGroup(name, pv.name, capacity, volumes))

    unknown = disk_mib is None
    if role == "compute":
        pv = add(data_pvs[0], vg="vg_gluster", grow=True, min_mib=DATA_VG_MIN_MIB)
        data_vg(pv, data_pvs[0], "vg_gluster", ("lv_gluster", "/export/gluster", "xfs"))
    else:
        nova_size, images_size = data_pvs
        nova = add(nova_size, vg="nova-volumes", grow=unknown, min_mib=DATA_VG_MIN_MIB)
        data_vg(nova, nova_size, "nova-volumes", None)
        if logical_last:
            add(images_size, kind="extended", grow=True)
            images_size = None if images_size is None else images_size - EBR_MIB
            number = 4  # logical partitions are numbered from 5 on msdos
            images = add(images_size, kind="logical", vg="vg_images", grow=True, min_mib=DATA_VG_MIN_MIB)
        else:
            images = add(images_size, vg="vg_images", grow=True, min_mib=DATA_VG_MIN_MIB)
        data_vg(images, images_size, "vg_images", ("lv_images", "/var/lib/glance/images", "ext4"))

    return Layout(role, device, disk_mib, label, tuple(partitions), tuple(groups))
