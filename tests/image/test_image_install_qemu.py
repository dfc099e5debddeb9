"""The image method end to end, with real parts: `provisiond image build` (Debian packages,
debootstrap; cached by content), `provisiond serve` on a lab bridge without uplink, and a QEMU
VM (TCG) behind the lab's virtual BMC. `provisiond provision` powers it on over IPMI with a
one-time PXE boot; the firmware (SeaBIOS + iPXE, or OVMF's own PXE) boots the deploy ramdisk,
which lays out the virtio disk from the storage model, writes the root image, installs GRUB
and reboots; the one-time boot is spent and netboot is off, so the VM comes up from its own
disk, where the agent reports the disk's layout facts, which provisiond compares with the
role's storage model; SSH shows the node from inside.

Both roles and both firmwares in two installs: a BIOS compute node and a UEFI controller.
A third test serves a corrupted image: the ramdisk must refuse it before writing to the disk.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from image_lab import IMAGE_CACHE, ImageSite, Node, build_images, disk_untouched, make_ssh_key

from provisiond.images.cache import ImageCache, publish
from provisiond.images.recipes import ramdisk_recipe, root_recipe
from provisiond.lifecycle import State

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(3600)]  # a cold image build included

COMPUTE = Node("vm1", "compute", "bios", "52:54:00:17:00:11", "10.213.0.11")
CONTROLLER = Node("ctl1", "controller", "uefi", "52:54:00:17:00:12", "10.213.0.12")
INSTALL_LIMIT = 1500  # seconds from power on to install-finished under TCG (5-12 min measured, by load)
SSH_LIMIT = 900  # seconds from the layout report until sshd answers (its host keys are made first)
AGENT_LIMIT = 1200  # seconds from install-finished to the agent's layout report (2-10 min measured, by load)


@pytest.fixture(scope="module")
def compute_images() -> str:
    return build_images("compute")


@pytest.fixture(scope="module")
def controller_images() -> str:
    return build_images("controller")


def image_listing(role: str) -> list[str]:
    image = ImageCache(IMAGE_CACHE).served(root_recipe("debian12", role))
    assert image is not None
    return subprocess.run(f"zstd -dc {image.path / 'root.tar.zst'} | tar -tf -", shell=True,
                          capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()


def test_root_image_holds_no_fstab_no_host_keys_and_no_agent(compute_images):
    """The layout script writes the node's fstab; the image must not carry one (a stale fstab
    leaves / read-only and the data volumes unmounted). The agent comes with the node script
    at deploy time, not in the image (a change of the agent rebuilds no image)."""
    listing = image_listing("compute")
    assert "./etc/fstab" not in listing
    for member in ("./etc/initramfs-tools/scripts/local-block/provisiond-lvm",
                   "./etc/initramfs-tools/scripts/local-bottom/provisiond-lvm",
                   "./etc/systemd/system/multi-user.target.wants/ssh.service"):
        assert member in listing, member
    assert not [name for name in listing if "provisiond-agent" in name]
    # glusterd is installed but not started at boot: it would hold back network-online.target;
    # the agent's manifest starts it.
    assert "./etc/systemd/system/multi-user.target.wants/glusterd.service" not in listing
    assert not [name for name in listing if name.startswith("./etc/ssh/ssh_host_")]


def phase_times(site: ImageSite, host: str) -> dict[str, float]:
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


def on_node(site: ImageSite, host: str, command: str, limit: float = 120) -> str:
    """`command`'s output over SSH, retried while sshd is not up yet (bounded)."""
    deadline = time.monotonic() + limit
    while True:
        result = site.ssh(host, command)
        if result.returncode == 0:
            return result.stdout.strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"ssh {host} {command!r}: exit {result.returncode}: {result.stderr.strip()}\n"
                                 f"{site.failure_context(host)}")
        time.sleep(5)


def install(site: ImageSite, node: Node) -> dict:
    """Provision `node` over IPMI and follow it to its agent's layout report; its timings."""
    timings: dict = {}
    t0 = time.monotonic()
    site.provision(node.hostname)
    site.wait_state(node.hostname, {State.INSTALLED, State.FAILED}, INSTALL_LIMIT)
    assert site.store is not None
    record = site.store.node(node.hostname)
    assert record.state is State.INSTALLED, f"{record.reason}\n{site.failure_context(node.hostname)}"
    timings["power-on to installed"] = round(time.monotonic() - t0, 1)
    assert record.netboot is False  # install-finished turned it off: no second install
    t1 = time.monotonic()
    # The guest's reboot: the one-time PXE is spent, the firmware boots the disk (GRUB,
    # Debian), and the agent's first step sends lsblk/vgs/lvs/findmnt from inside the VM.
    layout = site.wait_event(node.hostname, "agent:layout", AGENT_LIMIT)
    timings["installed to agent layout report"] = round(time.monotonic() - t1, 1)
    assert layout.detail == {"ok": True, "problems": []}, layout.detail
    timings["phases"] = phase_times(site, node.hostname)
    log = site.serve_log()
    assert "path=/images/ramdisk/debian12/initrd.img status=200" in log
    assert f"path=/deploy/{node.hostname}/root.tar.zst status=200" in log
    kinds = [e.kind for e in site.store.events(hostname=node.hostname)]
    for phase in ("image-fetch", "layout-fetch", "layout", "image-write", "identity", "bootloader"):
        assert f"deploy:{phase}" in kinds, kinds
    assert kinds.count("state:installing") == 1
    assert "power:pxe-boot" in kinds
    bmc = site.bmcs.output() if site.bmcs else ""
    assert bmc.count(f"{node.hostname} power on") == 1  # the guest rebooted itself; no second power on
    # Inside the node: sshd runs (with the node's own host keys; a read-only root once kept
    # it from starting), the root is writable, the identity is the node's.
    # sshd starts once the node's host keys exist (ssh-keygen -A on first boot: minutes under TCG).
    assert on_node(site, node.hostname, "systemctl is-active ssh.service", SSH_LIMIT) == "active"
    assert on_node(site, node.hostname, "findmnt -no OPTIONS /").split(",")[0] == "rw"
    assert on_node(site, node.hostname, "hostname") == node.hostname
    assert on_node(site, node.hostname, "test -s /etc/ssh/ssh_host_ed25519_key && echo keyed") == "keyed"
    return timings


def test_compute_node_installs_by_image_over_ipmi_and_boots_its_disk_bios(compute_images, tmp_path):
    """BIOS (SeaBIOS + the e1000's iPXE): msdos label, GRUB on the disk's MBR; compute layout."""
    with ImageSite(tmp_path, [COMPUTE], ssh_key=make_ssh_key(tmp_path), tag="b") as site:
        timings = install(site, COMPUTE)
        # The compute model's data volume, as the node itself sees it.
        assert on_node(site, "vm1", "findmnt -no FSTYPE /export/gluster") == "xfs"
    print("image install (BIOS, compute):", json.dumps(timings))


def test_controller_node_installs_by_image_over_ipmi_and_boots_its_disk_uefi(controller_images, tmp_path):
    """UEFI (OVMF, EDK2's own PXE on virtio-net): GPT with an ESP, GRUB on the ESP (a firmware
    boot entry and the removable path); controller layout: nova-volumes left empty for the
    block-storage service, vg_images/lv_images at /var/lib/glance/images."""
    # The compute node is in the inventory only (never powered on): a site without compute
    # nodes has no GlusterFS bricks, and the controller's manifest refuses to be made.
    with ImageSite(tmp_path, [CONTROLLER, COMPUTE], ssh_key=make_ssh_key(tmp_path), tag="u") as site:
        timings = install(site, CONTROLLER)
        assert on_node(site, "ctl1", "vgs --noheadings -o lv_count nova-volumes") == "0"
        assert on_node(site, "ctl1", "lvs --noheadings -o lv_name vg_images").split() == ["lv_images"]
        assert on_node(site, "ctl1", "findmnt -no SOURCE,FSTYPE /var/lib/glance/images").split() == \
            ["/dev/mapper/vg_images-lv_images", "ext4"]
        assert on_node(site, "ctl1", "findmnt -no FSTYPE /boot/efi") == "vfat"
        assert on_node(site, "ctl1", "test -d /sys/firmware/efi && echo uefi") == "uefi"
    print("image install (UEFI, controller):", json.dumps(timings))


def test_corrupt_image_is_refused_before_the_disk_is_touched(compute_images, tmp_path):
    """A truncated root image (its published sha256 no longer matches): the node fails with
    the checksum reason and the disk has not been written at all."""
    source = ImageCache(IMAGE_CACHE)
    ramdisk = source.served(ramdisk_recipe("debian12"))
    root = source.served(root_recipe("debian12", "compute"))
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
    with ImageSite(tmp_path, [COMPUTE], cache_dir=cache.dir, tag="c") as site:
        site.provision("vm1")
        site.wait_state("vm1", {State.INSTALLED, State.FAILED}, INSTALL_LIMIT)
        assert site.store is not None
        record = site.store.node("vm1")
        assert record.state is State.FAILED
        assert record.reason.startswith("deploy phase image-fetch failed: image checksum mismatch")
        assert "nothing was written to the disk" in record.reason
        kinds = [e.kind for e in site.store.events(hostname="vm1")]
        assert "deploy:layout" not in kinds
        disk = site.vms["vm1"].disk
    assert disk_untouched(disk), "the disk was written to"
