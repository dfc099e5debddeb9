"""The boot assets the inventory's nodes need, and where each one comes from (pure, no I/O).

A missing asset is reported with the Debian package that provides it (or, for an OS that is
not Debian's, where to copy it from), so the operator knows the one command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisiond.config import Config
from provisiond.images.recipes import Recipe, node_root_recipe, ramdisk_recipe
from provisiond.inventory import Inventory

# Path prefix -> what provides the files below it (Debian 12 packages, as laid out by them).
PROVIDERS: tuple[tuple[str, str], ...] = (
    ("/usr/lib/ipxe/", "apt install ipxe"),
    ("/usr/lib/debian-installer/images/12/amd64/", "apt install debian-installer-12-netboot-amd64"),
    ("/usr/lib/PXELINUX/", "apt install pxelinux"),
    ("/usr/lib/syslinux/modules/bios/", "apt install syslinux-common"),
    ("/usr/lib/grub/x86_64-efi-signed/", "apt install grub-efi-amd64-signed"),
    ("/usr/lib/shim/", "apt install shim-signed"),
)
OS_SOURCES = {
    "rocky9": "copy vmlinuz and initrd.img from a Rocky Linux 9 BaseOS mirror's images/pxeboot/",
}


@dataclass(frozen=True)
class Needed:
    """One file the nodes in `nodes` cannot boot without."""

    path: Path
    what: str
    nodes: tuple[str, ...]
    provider: str


def provider(path: Path, os_name: str | None = None) -> str:
    text = str(path)
    for prefix, how in PROVIDERS:
        if text.startswith(prefix):
            return how
    if os_name in OS_SOURCES:
        return OS_SOURCES[os_name]
    return "a file named in provisiond.toml: put it there or fix the path"


def needed_assets(inventory: Inventory, config: Config) -> list[Needed]:
    """Installer kernels and initrds of every OS in use, and the loaders of every firmware in
    use (image-method nodes boot the deploy ramdisk instead: see `needed_images`)."""
    by_path: dict[tuple[Path, str, str | None], list[str]] = {}

    def need(path: Path, what: str, host: str, os_name: str | None = None) -> None:
        by_path.setdefault((path, what, os_name), []).append(host)

    for node in inventory.nodes:
        if node.install_method == "installer":
            assets = config.assets.get(node.os_name)
            if assets is not None:
                need(assets.kernel, f"{node.os_name} installer kernel", node.hostname, node.os_name)
                need(assets.initrd, f"{node.os_name} installer initrd", node.hostname, node.os_name)
        loaders = [config.uefi_loader, config.uefi_local_loader] if node.uefi else [config.bios_loader]
        if "pxelinux.0" in loaders:
            loaders.append("ldlinux.c32")
        for name in loaders:
            if name in config.loaders:
                need(config.loaders[name], f"boot loader {name}", node.hostname)
    return [Needed(path, what, tuple(hosts), provider(path, os_name))
            for (path, what, os_name), hosts in by_path.items()]


def needed_images(inventory: Inventory) -> dict[Recipe, list[str]]:
    """Image-cache artifacts (the ramdisk of each OS, the root image each node deploys: see
    node_root_recipe) -> the image-method nodes needing them. Recipes, not names: what is
    served is the build with this code's key (ImageCache.served), not any build of the name."""
    needed: dict[Recipe, list[str]] = {}
    for node in inventory.nodes:
        if node.install_method == "image":
            for recipe in (ramdisk_recipe(node.os_name), node_root_recipe(node, inventory.site)):
                needed.setdefault(recipe, []).append(node.hostname)
    return needed
