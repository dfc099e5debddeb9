"""What goes into the image method's artifacts, as data: the root images per OS and role and
the deploy ramdisk, and the content key that names each build in the cache.

Pure: no I/O. `provisiond.images.build` runs the recipes; a build is reused as long as its
key (OS, role, suite, mirror, package list, build code, ramdisk scripts) is unchanged; the
agent is not in the image (the node script writes it at deploy time).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from provisiond.inventory import Node, Site
from provisiond.roles.openstack import OpenStackSettings, image_packages

IMAGE_OS = {"debian12": "bookworm"}  # OS name -> Debian suite; the image method builds these
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Every root image: boots from the storage model's disk (LVM, ext4, XFS, vfat ESP) with either
# firmware, reaches the network with systemd-networkd, runs the agent (python3 + requests).
ROOT_PACKAGES = (
    "systemd-sysv", "udev", "kmod", "linux-image-amd64", "initramfs-tools", "zstd",
    "grub-pc-bin", "grub-efi-amd64-bin", "grub2-common", "efibootmgr",
    "lvm2", "xfsprogs", "e2fsprogs", "dosfstools", "util-linux",
    "openssh-server", "python3", "python3-requests", "ca-certificates",
    "iproute2", "procps", "less", "chrony",
)
# The role's own services, preinstalled with their starts held back (first boot configures).
# Every node runs glusterd (the controller builds the volume: it must be in the trusted pool to
# probe; manifests/gluster-server.yaml.j2), and a lab node has no mirror to install it from.
ROLE_PACKAGES = {
    "compute": ("glusterfs-server", "glusterfs-client"),
    "controller": ("glusterfs-server", "glusterfs-client"),
}
# The role's services are not enabled here: the agent's manifest enables and starts them
# (glusterd: Debian ships it disabled). Enabled at boot, glusterd.service, which is ordered
# Before=network-online.target, held the agent back: on loaded TCG lab nodes its start hit the
# unit's 300 s timeout and restarted, and the first boot waited over 30 min. The agent itself is
# not in the image: the deploy's node script writes and enables it.
BASE_SERVICES = ("systemd-networkd.service", "ssh.service")

# The deploy ramdisk: what the layout script, the image writer and the reporting need.
RAMDISK_PACKAGES = (
    "linux-image-amd64", "kmod", "busybox", "curl", "lvm2", "xfsprogs", "e2fsprogs", "parted",
    "fdisk", "dosfstools", "zstd", "util-linux",
)
# Kernel modules the ramdisk keeps (with their dependencies); the rest of the kernel's
# modules are dropped, which is most of the ramdisk's size.
RAMDISK_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_rng", "e1000", "e1000e",
    "ahci", "ata_piix", "sd_mod", "nvme", "dm_mod", "ext4", "xfs", "vfat", "nls_cp437",
    "nls_ascii", "nls_utf8", "efivarfs", "af_packet",
)
# Kernel module trees dropped from root images: hardware that a server does not have.
ROOT_MODULE_TRIM = (
    "kernel/drivers/gpu", "kernel/drivers/media", "kernel/drivers/net/wireless", "kernel/sound",
    "kernel/drivers/staging", "kernel/drivers/bluetooth", "kernel/drivers/infiniband",
    "kernel/drivers/iio", "kernel/drivers/hid", "kernel/drivers/input/joystick",
    "kernel/drivers/isdn", "kernel/net/bluetooth", "kernel/net/wireless", "kernel/net/mac80211",
)
# Documentation and caches dropped from every artifact.
TRIM_PATHS = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf/templates.dat-old",
)
# Files dropped, directories kept (with their owners and modes): packages make their services'
# log directories (/var/log/nova, /var/log/rabbitmq) at install, and the services do not start
# without them.
TRIM_FILES = ("var/log",)


class RecipeError(ValueError):
    """A build that cannot be made (unknown OS or role); the message says what is supported."""


@dataclass(frozen=True)
class Recipe:
    """One artifact to build: a root image (os + role) or the deploy ramdisk (os, role None)."""

    kind: str  # root | ramdisk
    os_name: str
    role: str | None
    suite: str
    mirror: str
    packages: tuple[str, ...]
    services: tuple[str, ...] = ()
    # The site's OpenStack packages for the role (roles.openstack.image_packages), installed
    # with apt after debootstrap, service starts held back, and the debconf answers they need.
    openstack: tuple[str, ...] = ()
    debconf: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The artifact's name: root-debian12-compute(-openstack), ramdisk-debian12."""
        if self.kind != "root":
            return f"ramdisk-{self.os_name}"
        return f"root-{self.os_name}-{self.role}" + ("-openstack" if self.openstack else "")

    def key(self, *inputs: bytes) -> str:
        """The content key: this recipe plus the build code and ramdisk scripts it uses (the
        OpenStack packages and answers only when there are some: other keys stay as they were)."""
        recipe = {"kind": self.kind, "os": self.os_name, "role": self.role, "suite": self.suite,
                  "mirror": self.mirror, "packages": sorted(self.packages), "services": self.services}
        if self.openstack:
            recipe.update(openstack=sorted(self.openstack), debconf=sorted(self.debconf))
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
        for data in inputs:
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()


def _suite(os_name: str) -> str:
    if os_name not in IMAGE_OS:
        raise RecipeError(
            f"the image method builds {', '.join(sorted(IMAGE_OS))} only, not {os_name!r} "
            "(use the installer method for it: install: installer)"
        )
    return IMAGE_OS[os_name]


def root_recipe(os_name: str, role: str, mirror: str = DEFAULT_MIRROR,
                openstack: OpenStackSettings | None = None) -> Recipe:
    """The root image of a role; with the site's OpenStack settings it also carries the role's
    OpenStack packages (a lab node has no mirror: the agent's packages step finds them there)."""
    if role not in ROLE_PACKAGES:
        raise RecipeError(f"no root image for role {role!r} (known: {', '.join(sorted(ROLE_PACKAGES))})")
    suite = _suite(os_name)
    packages, debconf = image_packages(openstack, role, "debian")
    return Recipe("root", os_name, role, suite, mirror, ROOT_PACKAGES + ROLE_PACKAGES[role],
                  BASE_SERVICES, packages, debconf)


def node_root_recipe(node: Node, site: Site) -> Recipe:
    """The root image a node deploys: its OS and role, with the role's OpenStack packages when
    the site has an `openstack:` section (root-<os>-<role>-openstack). The one rule: what the
    deploy serves and what doctor looks for both come from here."""
    return root_recipe(node.os_name, node.role, openstack=site.openstack)


def ramdisk_recipe(os_name: str, mirror: str = DEFAULT_MIRROR) -> Recipe:
    return Recipe("ramdisk", os_name, None, _suite(os_name), mirror, RAMDISK_PACKAGES)
