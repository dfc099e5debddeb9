"""Builds the image method's artifacts on the server, natively, from Debian packages only:
root images (`root-<os>-<role>`: root.tar.zst) and the deploy ramdisk (`ramdisk-<os>`:
vmlinuz + initrd.img). Each build lands in the cache under its content key with a sha256
file beside every artifact; a build whose key is already there is reused.

Needs root (debootstrap, chroot). Debian packages come from the mirror through debootstrap,
whose downloaded .debs are kept in the cache (`debs/`) so rebuilds do not fetch them again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from provisiond.errors import UserError
from provisiond.images.cache import Artifact, ImageCache, publish
from provisiond.images.recipes import RAMDISK_MODULES, ROOT_MODULE_TRIM, TRIM_PATHS, Recipe

RAMDISK_FILES = Path(__file__).resolve().parent / "ramdisk"
BUILD_TIMEOUT = 1800  # seconds for one debootstrap (a slow mirror); every step is bounded

# Debian 12's initramfs activates LVM only through udev events, and that races at boot:
# - the root LV may not exist yet when it is looked for (2 of 5 boots in the measurements
#   dropped to "vg_base-lv_root does not exist"): the `local-block` copy activates it;
# - udev's pvscan marks every complete VG "online" in /run/lvm before its vgchange has run; when
#   the root appears first, the initramfs moves on and udev exits, a data VG (vg_gluster,
#   vg_images) may never be activated, and the booted system, seeing it "online", never
#   activates it either: the first boot waits on its fstab UUID (a CI run sat 10 minutes on
#   one). The `local-bottom` copy, run on every boot after the root is mounted and before udev
#   exits, settles udev and activates every VG, so every LV exists when systemd starts.
LVM_ACTIVATE = """#!/bin/sh
# provisiond: activate every volume group in the initramfs (no udev race; see images/build.py).
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
udevadm settle --timeout=60 >/dev/null 2>&1 || true
lvm vgchange -aay --sysinit >/dev/null 2>&1 || true
"""
LVM_ACTIVATE_STAGES = ("local-block", "local-bottom")
GRUB_DEFAULTS = """# provisiond: serial and VGA console, no menu wait, no os-prober
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""
SSH_KEYS_UNIT = """[Unit]
Description=provisiond: host keys of this node (an image carries none)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""

Progress = Callable[[str], None]


def build_inputs(recipe: Recipe) -> list[bytes]:
    """Everything besides the recipe that decides a build's bytes (its content key)."""
    inputs = [Path(__file__).read_bytes()]
    if recipe.kind == "ramdisk":
        inputs += [path.read_bytes() for path in sorted(RAMDISK_FILES.iterdir())]
    return inputs


def _run(command: list[str], progress: Progress, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise UserError(f"image build: {' '.join(command[:4])} ... did not finish in {timeout:.0f} s (a machine "
                        "this loaded: run the build again when it is quieter); nothing was published") from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise UserError(f"image build: {' '.join(command[:3])} ... failed (exit {result.returncode}):\n"
                        + "\n".join(tail))
    return result


@contextlib.contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /sys and /dev inside a chroot for the commands that need them; always undone."""
    mounted: list[Path] = []
    try:
        for fs, where, options in (("proc", "proc", []), ("sysfs", "sys", []), ("devtmpfs", "dev", [])):
            target = root / where
            target.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", fs, *options, fs, str(target)], check=True, timeout=30)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False, timeout=30)


def _debootstrap(recipe: Recipe, root: Path, debs: Path, progress: Progress) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    progress(f"debootstrap {recipe.suite} ({len(recipe.packages)} packages) from {recipe.mirror}")
    env = dict(os.environ, INITRD="No", DEBIAN_FRONTEND="noninteractive")  # initramfs built once, later
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
          f"--cache-dir={debs}", recipe.suite, str(root), recipe.mirror],
         progress, timeout=BUILD_TIMEOUT, env=env)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    return [point for point in points if (point + "/").startswith(prefix)]


def remove_tree(path: Path) -> None:
    """Delete a build tree, but never through a mount left inside it (a chroot's /dev, /proc)."""
    if not path.exists():
        return
    for point in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", point], check=False, timeout=60)
    left = _mounts_under(path)
    if left:
        raise UserError(f"image build: {', '.join(left)} still mounted; not deleting {path} (umount it)")
    shutil.rmtree(path)


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "usr/lib/modules").iterdir())
    if len(versions) != 1:
        raise UserError(f"image build: expected one kernel in {root}, found {versions}")
    return versions[0]


def _trim(root: Path) -> None:
    for relative in TRIM_PATHS:
        target = root / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _build_root(recipe: Recipe, work: Path, out: Path, debs: Path, progress: Progress) -> tuple[list[Path], dict]:
    root = work / "root"
    _debootstrap(recipe, root, debs, progress)
    version = _kernel_version(root)
    progress(f"configure: kernel {version}, LVM activation in the initramfs, services")
    (root / "etc/fstab").unlink(missing_ok=True)  # the layout script writes it, by UUID, on the node
    for stage in LVM_ACTIVATE_STAGES:
        script = root / "etc/initramfs-tools/scripts" / stage / "provisiond-lvm"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(LVM_ACTIVATE)
        script.chmod(0o755)
    (root / "etc/default/grub").write_text(GRUB_DEFAULTS)
    modules = root / "usr/lib/modules" / version
    for relative in ROOT_MODULE_TRIM:
        shutil.rmtree(modules / relative, ignore_errors=True)
    _run(["chroot", str(root), "depmod", version], progress)
    # The agent is not baked in: the deploy's node script writes it (no rebuild when it changes).
    (root / "etc/systemd/system/provisiond-ssh-keys.service").write_text(SSH_KEYS_UNIT)
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    _run(["chroot", str(root), "systemctl", "enable", *recipe.services, "provisiond-ssh-keys.service"], progress)
    progress("initramfs (built here, natively: update-initramfs on a TCG node takes minutes)")
    with _chroot_mounts(root):
        # zstd -9 of ~40 MB: ~1 min idle, it passed 600 s with six test suites on two cores.
        _run(["chroot", str(root), "update-initramfs", "-c", "-k", version], progress, timeout=BUILD_TIMEOUT)
    (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    _trim(root)
    tree = _tree_bytes(root)
    image = out / "root.tar.zst"
    progress(f"archive {tree / 1e6:.0f} MB of files into {image.name} (zstd -3)")
    with image.open("wb") as handle:
        tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root),
                                "-cf", "-", "."], stdout=subprocess.PIPE)
        zstd = subprocess.run(["zstd", "-3", "-T0", "-q", "-c"], stdin=tar.stdout, stdout=handle, timeout=900)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait(timeout=900) != 0 or zstd.returncode != 0:
            raise UserError(f"image build: archiving {root} failed")
    return [image], {"kernel": version, "tree_bytes": tree}


def _build_ramdisk(recipe: Recipe, work: Path, out: Path, debs: Path, progress: Progress) -> tuple[list[Path], dict]:
    root = work / "root"
    _debootstrap(recipe, root, debs, progress)
    version = _kernel_version(root)
    progress(f"ramdisk: kernel {version}, keep {len(RAMDISK_MODULES)} modules and their dependencies")
    kernel = out / "vmlinuz"
    shutil.copyfile(root / f"boot/vmlinuz-{version}", kernel)
    keep: set[Path] = set()
    for module in RAMDISK_MODULES:
        shown = subprocess.run(["chroot", str(root), "modprobe", "-S", version, "--show-depends", module],
                               capture_output=True, text=True, timeout=60)
        for line in shown.stdout.splitlines():
            if line.startswith("insmod "):
                keep.add((root / line.split()[1].lstrip("/")).resolve())
    modules = root / "usr/lib/modules" / version
    for path in modules.rglob("*.ko*"):
        if path.resolve() not in keep:
            path.unlink()
    _run(["chroot", str(root), "depmod", version], progress)
    shutil.rmtree(root / "boot")
    _trim(root)
    for relative in ("usr/share/zoneinfo", "usr/share/i18n", "usr/share/perl", "usr/lib/x86_64-linux-gnu/perl"):
        shutil.rmtree(root / relative, ignore_errors=True)
    (root / "etc/provisiond").mkdir(parents=True, exist_ok=True)
    (root / "etc/provisiond/modules").write_text("\n".join(RAMDISK_MODULES) + "\n")
    (root / "usr/lib/provisiond").mkdir(parents=True, exist_ok=True)
    for name, where in (("init", "init"), ("deploy", "usr/lib/provisiond/deploy"),
                        ("udhcpc.script", "usr/lib/provisiond/udhcpc.script")):
        shutil.copyfile(RAMDISK_FILES / name, root / where)
        (root / where).chmod(0o755)
    initrd = out / "initrd.img"
    progress(f"initramfs: cpio of {_tree_bytes(root) / 1e6:.0f} MB, zstd")
    with initrd.open("wb") as handle:
        files = subprocess.run(["find", ".", "-mindepth", "1", "-print0"], cwd=root, capture_output=True,
                               check=True, timeout=120).stdout
        cpio = subprocess.Popen(["cpio", "--null", "-o", "-H", "newc", "--quiet"], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        zstd = subprocess.Popen(["zstd", "-10", "-T0", "-q", "-c"], stdin=cpio.stdout, stdout=handle)
        assert cpio.stdin is not None and cpio.stdout is not None
        cpio.stdout.close()
        cpio.stdin.write(files)
        cpio.stdin.close()
        if cpio.wait(timeout=600) != 0 or zstd.wait(timeout=600) != 0:
            raise UserError("image build: the ramdisk's cpio archive failed")
    return [kernel, initrd], {"kernel": version, "modules_kept": len(keep)}


def build(recipe: Recipe, cache: ImageCache, progress: Progress, force: bool = False) -> tuple[Artifact, bool]:
    """The artifact for `recipe`: (from the cache, False) or (built now, True)."""
    key = recipe.key(*build_inputs(recipe))
    cached = cache.lookup(recipe.name, key)
    if cached is not None and not force:
        progress(f"{recipe.name}: cached ({key[:12]})")
        return cached, False
    if os.geteuid() != 0:
        raise UserError("image build needs root (debootstrap and chroot); run it as root")
    for program in ("debootstrap", "zstd", "cpio", "chroot"):
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            raise UserError(f"image build needs {program} (apt-get install it, or run make deps)")
    started = time.time()
    cache.dir.mkdir(parents=True, exist_ok=True)
    work = cache.dir / f".build-{recipe.name}-{os.getpid()}"
    remove_tree(work)
    out = work / "out"
    out.mkdir(parents=True)

    def step(text: str) -> None:
        progress(f"{recipe.name}: [{time.time() - started:5.0f} s] {text}")

    try:
        builder = _build_root if recipe.kind == "root" else _build_ramdisk
        files, extra = builder(recipe, work, out, cache.dir / "debs", step)
        remove_tree(work / "root")
        artifact = publish(out, files, recipe, key, cache, started, extra)
    finally:
        remove_tree(work)
    sizes = ", ".join(f"{name} {info['bytes'] / 1e6:.1f} MB" for name, info in artifact.files.items())
    step(f"done ({key[:12]}): {sizes}")
    return artifact, True
