"""The image method end to end, with real parts: `provisiond image build` (Debian packages,
debootstrap; cached by content), `provisiond serve` on a bridge without uplink in a namespace,
a QEMU VM (TCG; SeaBIOS or OVMF, e1000 with iPXE) that PXE-boots the deploy ramdisk, which
lays out the virtio disk from the storage model, writes the root image, installs GRUB and
reboots; netboot is off by then, so the VM boots its own disk, where the agent (in the image)
reports the disk's layout facts, which provisiond compares with the compute storage model.

A second test serves a corrupted image: the ramdisk must refuse it before writing to the disk.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from image_lab import IMAGE_CACHE, Site, Vm, bridge_namespace, build_images

from provisiond.images.cache import ImageCache, publish
from provisiond.images.recipes import ramdisk_recipe, root_recipe
from provisiond.lifecycle import State

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(2400)]  # a cold image build included

MAC = "52:54:00:17:00:11"
DISK_GIB = 30  # the compute layout needs 25598 MiB; lv_gluster gets the rest
INVENTORY = LAB_SITE_YAML + """\
  install: image
  root_password_hash: $6$NTD9RTgBuEBLAtYO$fViymCfiMzQAshwklT09UqAbc4NjMjHujAJtk4W9c4G7UPpRurGuIJtNxbGZyfSOcCQ2LaHgpmn8x1uF1WM0t/
nodes:
  - {hostname: vm1, mac: 'MAC', role: compute, ip: 10.213.0.11, firmware: FIRMWARE,
     disk: {device: vda, size: DISKGiB}}
""".replace("MAC", MAC).replace("DISK", str(DISK_GIB))
INSTALL_LIMIT = 900  # seconds from power on to install-finished under TCG (~2-3 min measured)
AGENT_LIMIT = 600  # seconds from install-finished to the agent's layout report (~2 min measured)


@pytest.fixture(scope="module")
def compute_images() -> str:
    return build_images("compute")


def test_root_image_holds_the_agent_and_no_fstab(compute_images):
    """The layout script writes the node's fstab; the image must not carry one (a stale fstab
    leaves / read-only and the data volumes unmounted). The agent and its unit are inside."""
    image = ImageCache(IMAGE_CACHE).lookup(root_recipe("debian12", "compute").name)
    assert image is not None
    listing = subprocess.run(f"zstd -dc {image.path / 'root.tar.zst'} | tar -tf -", shell=True,
                             capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()
    assert "./etc/fstab" not in listing
    for member in ("./usr/local/lib/provisiond-agent/provisiond-agent.pyz",
                   "./etc/systemd/system/provisiond-agent.service",
                   "./etc/initramfs-tools/scripts/local-block/provisiond-lvm",
                   "./etc/initramfs-tools/scripts/local-bottom/provisiond-lvm"):
        assert member in listing, member
    # not started at boot: it would hold back network-online.target, the agent starts it
    assert "./etc/systemd/system/multi-user.target.wants/glusterd.service" not in listing
    assert not [name for name in listing if name.startswith("./etc/ssh/ssh_host_")]


def wait_event(site: Site, host: str, kind: str, limit: float, vm: Vm):
    """The first event of `kind` for the host, waiting up to `limit` seconds."""
    assert site.store is not None
    deadline = time.monotonic() + limit
    while True:
        found = [event for event in site.store.events(hostname=host) if event.kind == kind]
        if found:
            return found[0]
        assert vm.process is not None and vm.process.poll() is None, f"QEMU exited:\n{vm.serial_tail()}"
        if time.monotonic() > deadline:
            kinds = [event.kind for event in site.store.events(hostname=host)]
            raise AssertionError(f"no {kind} event after {limit} s (events: {kinds}); serial:\n"
                                 f"{vm.serial_tail()}\nserve log:\n{site.serve_log()[-3000:]}")
        time.sleep(2)


def phase_times(site: Site, host: str) -> dict[str, float]:
    """Seconds each deploy phase took, from the ramdisk's own clock in its reports."""
    assert site.store is not None
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    for event in site.store.events(hostname=host):
        if event.kind.startswith("deploy:") and "uptime" in event.detail:
            phase = event.kind.removeprefix("deploy:")
            if event.detail["status"] == "started":
                started[phase] = event.detail["uptime"]
            elif phase in started:
                took[phase] = round(event.detail["uptime"] - started[phase], 1)
    return took


def install(tmp_path: Path, firmware: str) -> dict:
    timings: dict = {}
    with bridge_namespace(firmware[:1]) as ns:
        site = Site(tmp_path, ns, INVENTORY.replace("FIRMWARE", firmware))
        vm = Vm(tmp_path, ns, MAC, DISK_GIB, firmware=firmware)
        try:
            site.start()
            assert site.cli("netboot", "vm1", "on").returncode == 0
            vm.prepare()
            t0 = time.monotonic()
            vm.start()
            site.wait_state("vm1", {State.INSTALLED, State.FAILED}, INSTALL_LIMIT, vm)
            record = site.store.node("vm1")
            assert record.state is State.INSTALLED, f"{record.reason}\nserial:\n{vm.serial_tail()}"
            timings["power-on to installed"] = round(time.monotonic() - t0, 1)
            assert record.netboot is False  # install-finished turned it off: no second install
            t1 = time.monotonic()
            # The reboot: PXE again, iPXE hears "boot local", GRUB from the disk, Debian, and
            # the agent's first step sends lsblk/vgs/lvs/findmnt from inside the VM.
            layout = wait_event(site, "vm1", "agent:layout", AGENT_LIMIT, vm)
            timings["installed to agent layout report"] = round(time.monotonic() - t1, 1)
            assert layout.detail == {"ok": True, "problems": []}, layout.detail
            assert "vm1 login:" in vm.serial.read_text(errors="replace")
            timings["phases"] = phase_times(site, "vm1")
            log = site.serve_log()
            assert "path=/images/ramdisk/debian12/initrd.img status=200" in log
            assert "path=/deploy/vm1/root.tar.zst status=200" in log
            kinds = [e.kind for e in site.store.events(hostname="vm1")]
            for phase in ("image-fetch", "layout-fetch", "layout", "image-write", "identity", "bootloader"):
                assert f"deploy:{phase}" in kinds, kinds
            assert kinds.count("state:installing") == 1
        finally:
            vm.stop()
            site.stop()
    return timings


def test_compute_node_installs_by_image_and_boots_its_disk_bios(compute_images, tmp_path):
    timings = install(tmp_path, "bios")
    print("image install (BIOS):", json.dumps(timings))


def test_compute_node_installs_by_image_and_boots_its_disk_uefi(compute_images, tmp_path):
    """The same under OVMF: GPT with an ESP, GRUB on the ESP (a firmware boot entry and the
    removable path)."""
    timings = install(tmp_path, "uefi")
    print("image install (UEFI):", json.dumps(timings))


def test_corrupt_image_is_refused_before_the_disk_is_touched(compute_images, tmp_path):
    """A truncated root image (its published sha256 no longer matches): the node fails with
    the checksum reason and the disk is still all zeros."""
    source = ImageCache(IMAGE_CACHE)
    ramdisk = source.lookup(ramdisk_recipe("debian12").name)
    root = source.lookup(root_recipe("debian12", "compute").name)
    assert ramdisk is not None and root is not None
    cache = ImageCache(tmp_path / "cache")
    for artifact, recipe, truncate in ((ramdisk, ramdisk_recipe("debian12"), False),
                                       (root, root_recipe("debian12", "compute"), True)):
        staging = cache.dir / f".staging-{artifact.name}"
        staging.mkdir(parents=True)
        paths = []
        for name in artifact.files:
            if truncate:
                (staging / name).write_bytes((artifact.path / name).read_bytes()[: 1 << 20])
            else:
                (staging / name).symlink_to(artifact.path / name)
            paths.append(staging / name)
        published = publish(staging, paths, recipe, artifact.key, cache, 0.0, {})
        if truncate:  # the published checksum is the real image's; the file is cut short
            meta = dict(published.meta, files=artifact.files)
            (published.path / "meta.json").write_text(json.dumps(meta))
    with bridge_namespace("c") as ns:
        site = Site(tmp_path, ns, INVENTORY.replace("FIRMWARE", "bios"), cache_dir=cache.dir)
        vm = Vm(tmp_path, ns, MAC, DISK_GIB)
        try:
            site.start()
            assert site.cli("netboot", "vm1", "on").returncode == 0
            vm.prepare()
            vm.start()
            site.wait_state("vm1", {State.INSTALLED, State.FAILED}, INSTALL_LIMIT, vm)
            record = site.store.node("vm1")
            assert record.state is State.FAILED
            assert record.reason.startswith("deploy phase image-fetch failed: image checksum mismatch")
            assert "nothing was written to the disk" in record.reason
            kinds = [e.kind for e in site.store.events(hostname="vm1")]
            assert "deploy:layout" not in kinds
        finally:
            vm.stop()
            site.stop()
    with vm.disk.open("rb") as disk:
        assert disk.read(4 << 20) == bytes(4 << 20), "the disk was written to"
