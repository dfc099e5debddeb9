#!/usr/bin/env python3
"""Capture real lsblk/vgs/lvs/findmnt JSON from a real LVM system, for tests/agent/data/.

The host kernel has no device-mapper, so this boots Debian 12's kernel under QEMU with a small
initramfs made of the host's own binaries (busybox, lvm, util-linux, e2fsprogs, xfsprogs),
lays out a virtio disk exactly as the compute storage model says (msdos; /boot, vg_base with
lv_root/lv_swap/lv_home, vg_gluster with lv_gluster as XFS), mounts it at the real paths in a
chroot on lv_root, and prints the agent's own layout commands (agent.steps.layout.COMMANDS).
Then it removes vg_gluster and prints them again (a node whose brick volume group is missing).

    apt-get download linux-image-6.1.0-57-amd64; dpkg-deb -x linux-image-*.deb kroot
    tests/tools/capture-layout-facts.py kroot tests/agent/data

Writes compute-vda-40GiB.json and compute-vda-40GiB-no-vg_gluster.json (and the console log).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.steps.layout import COMMANDS  # noqa: E402  (the very commands the agent runs)
from provisiond.layouts import plan_layout  # noqa: E402

DISK_BYTES = 40 * 1024**3
MODULES = ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci", "virtio_blk",
           "dm-mod", "crc32c_generic", "libcrc32c", "xfs", "jbd2", "mbcache", "crc16", "ext4", "virtio-rng"]
PROGRAMS = ["busybox", "lvm", "lsblk", "findmnt", "mkfs.xfs", "mke2fs", "mkswap", "sfdisk", "swapon"]


def libraries(program: str) -> set[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True).stdout
    return set(re.findall(r"(/\S+\.so[.\d]*)", out))


def cpio_newc(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A newc cpio archive: {path: (mode, data)}; directories have data b""."""
    out = io.BytesIO()
    for number, (name, (mode, data)) in enumerate([*files.items(), ("TRAILER!!!", (0, b""))]):
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(f"{value:08x}" for value in (
            number + 1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0))
        out.write(header.encode() + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def init_script() -> str:
    layout = plan_layout("compute", DISK_BYTES, device="vda")
    boot, base, gluster = (part.size_mib for part in layout.partitions)
    swap = layout.volume_group("vg_base").logical_volumes[1].size_mib
    root = layout.volume_group("vg_base").logical_volumes[0].size_mib
    capture = "; ".join(f"echo '=====BEGIN {name}====='; {shlex.join(argv)}; echo '=====END {name}====='"
                        for name, argv in COMMANDS.items())
    options = "--config 'activation { udev_sync = 0 udev_rules = 0 } devices { obtain_device_list_from_udev = 0 }'"
    return f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin DM_DISABLE_UDEV=1
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in {' '.join(MODULES)}; do insmod /modules/$m.ko || echo "insmod $m failed"; done
sleep 1
printf 'label: dos\\nstart=2048, size={boot * 2048}, type=83\\nsize={base * 2048}, type=8e\\nsize={gluster * 2048}, type=8e\\n' | sfdisk -q /dev/vda
sleep 1
mdev -s 2>/dev/null
lvm pvcreate {options} -q /dev/vda2 /dev/vda3
lvm vgcreate {options} -q vg_base /dev/vda2
lvm vgcreate {options} -q vg_gluster /dev/vda3
lvm lvcreate {options} -q -y -n lv_root -L {root}m vg_base
lvm lvcreate {options} -q -y -n lv_swap -L {swap}m vg_base
lvm lvcreate {options} -q -y -n lv_home -l 100%FREE vg_base
lvm lvcreate {options} -q -y -n lv_gluster -l 100%FREE vg_gluster
lvm vgscan {options} --mknodes -q
mke2fs -q -t ext4 /dev/vda1; mke2fs -q -t ext4 /dev/mapper/vg_base-lv_root; mke2fs -q -t ext4 /dev/mapper/vg_base-lv_home
mkswap -q /dev/mapper/vg_base-lv_swap; mkfs.xfs -q -i size=512 /dev/mapper/vg_gluster-lv_gluster
mkdir -p /newroot; mount /dev/mapper/vg_base-lv_root /newroot
cp -a /bin /sbin /lib /lib64 /usr /etc /newroot/ 2>/dev/null
mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/boot /newroot/home /newroot/export/gluster
mount -t proc proc /newroot/proc; mount -t sysfs sysfs /newroot/sys; mount --bind /dev /newroot/dev
mount /dev/vda1 /newroot/boot; mount /dev/mapper/vg_base-lv_home /newroot/home
mount -t xfs /dev/mapper/vg_gluster-lv_gluster /newroot/export/gluster
swapon /dev/mapper/vg_base-lv_swap
echo '=====CAPTURE full====='
chroot /newroot /bin/sh -c "export PATH=/bin:/sbin:/usr/bin:/usr/sbin DM_DISABLE_UDEV=1; {capture}"
umount /newroot/export/gluster
lvm lvremove {options} -q -f vg_gluster/lv_gluster; lvm vgremove {options} -q -f vg_gluster
echo '=====CAPTURE no-vg_gluster====='
chroot /newroot /bin/sh -c "export PATH=/bin:/sbin:/usr/bin:/usr/sbin DM_DISABLE_UDEV=1; {capture}"
echo '=====DONE====='
poweroff -f
"""


def main() -> int:
    kroot, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    version = next((kroot / "lib" / "modules").iterdir()).name
    modules = {path.name.removesuffix(".ko"): path for path in (kroot / "lib" / "modules" / version).rglob("*.ko")}
    files: dict[str, tuple[int, bytes]] = {}
    for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "lib64", "etc", "proc", "sys", "dev",
                      "modules", "usr/lib", "usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"):
        files[directory] = (0o40755, b"")
    needed: set[str] = set()
    for program in PROGRAMS:
        path = shutil.which(program, path="/usr/sbin:/sbin:/usr/bin:/bin")
        assert path, f"{program} is not installed"
        files[f"bin/{program}"] = (0o100755, Path(path).read_bytes())
        needed |= libraries(path)
    for lib in sorted(needed):
        real = Path(lib).resolve()
        for name in {lib.lstrip("/"), str(real).lstrip("/")}:
            parent = str(Path(name).parent)
            files.setdefault(parent, (0o40755, b""))
            files[name] = (0o100755, real.read_bytes())
    for name in ("pvcreate", "vgcreate", "lvcreate", "vgs", "lvs", "vgremove", "lvremove", "vgscan"):
        files[f"bin/{name}"] = (0o120777, b"lvm")
    files["bin/mkfs.ext4"] = (0o120777, b"mke2fs")
    for module in MODULES:
        files[f"modules/{module}.ko"] = (0o100644, modules[module].read_bytes())
    files["etc/passwd"] = (0o100644, b"root:x:0:0:root:/:/bin/sh\n")
    files["init"] = (0o100755, init_script().encode())
    ordered = dict(sorted(files.items(), key=lambda item: (item[0].count("/"), item[0])))
    with tempfile.TemporaryDirectory() as work:
        initrd = Path(work) / "initrd.gz"
        initrd.write_bytes(gzip.compress(cpio_newc(ordered), 6))
        disk = Path(work) / "disk.raw"
        with disk.open("wb") as handle:
            handle.truncate(DISK_BYTES)
        console = subprocess.run(
            ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-m", "768", "-smp", "1", "-nographic",
             "-no-reboot", "-kernel", str(kroot / "boot" / f"vmlinuz-{version}"), "-initrd", str(initrd),
             "-append", "console=ttyS0 panic=-1 quiet", "-drive", f"file={disk},format=raw,if=virtio",
             "-device", "virtio-rng-pci"], capture_output=True, text=True, timeout=900).stdout
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "capture-console.log").write_text(console)
    text = console.replace("\r", "")
    for label, filename in (("full", "compute-vda-40GiB.json"), ("no-vg_gluster", "compute-vda-40GiB-no-vg_gluster.json")):
        section = text.split(f"=====CAPTURE {label}=====", 1)[1]
        facts = {}
        for name in COMMANDS:
            body = section.split(f"=====BEGIN {name}=====", 1)[1].split(f"=====END {name}=====", 1)[0]
            facts[name] = json.loads(body)
        (out_dir / filename).write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out_dir / filename}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
