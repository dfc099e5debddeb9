"""Boot-file formats: each renders a BootSpec and owns the file names it answers to.

Like MAAS's BootMethod.match_path: a request path goes to every format in turn; the one that
recognises it names the MAC it is for. Nothing here decides install or local: the BootSpec
says which; these only write it in the loader's language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from provisiond.boot.decision import BootSpec

_MAC = r"((?:[0-9a-f]{2}[-:]){5}[0-9a-f]{2})"


def _mac(text: str) -> str:
    return text.lower().replace("-", ":")


class BootFormat(Protocol):
    name: str

    def match(self, path: str) -> str | None:
        """The MAC a request path is for, if this format owns the path."""

    def render(self, spec: BootSpec) -> str: ...


@dataclass(frozen=True)
class Ipxe:
    """iPXE script, fetched over HTTP as /boot/<mac>.ipxe (the DHCP boot file iPXE gets)."""

    name: str = "ipxe"

    def match(self, path: str) -> str | None:
        found = re.fullmatch(r"/?(?:boot/)?" + _MAC + r"\.ipxe", path, re.IGNORECASE)
        return _mac(found.group(1)) if found else None

    def render(self, spec: BootSpec) -> str:
        if not spec.install:
            return (
                "#!ipxe\n"
                f"# provisiond: {spec.hostname} ({spec.mac}) boots local\n"
                f"echo provisiond: {spec.hostname} boots from its local disk\n"
                # exit 1: a failed boot option, so UEFI goes on to the next one (the disk);
                # a plain exit (success) would stop at the firmware's boot manager menu.
                # (UEFI PXE firmware boots local through GRUB instead: see decision.py.)
                "iseq ${platform} efi && exit 1 ||\n"
                "sanboot --no-describe --drive 0x80 || exit\n"
            )
        assert spec.kernel and spec.initrd
        # initrd=NAME: a UEFI kernel's EFI stub loads the initrd iPXE registered by that name.
        return (
            "#!ipxe\n"
            f"# provisiond: {spec.hostname} ({spec.mac}) installs {spec.os} ({spec.method})\n"
            f"echo provisiond: installing {spec.os} on {spec.fqdn}\n"
            f"kernel {spec.kernel.url} initrd={spec.initrd.name} {spec.cmdline}\n"
            f"initrd {spec.initrd.url}\n"
            "boot\n"
        )


@dataclass(frozen=True)
class Pxelinux:
    """pxelinux config: pxelinux.0 asks for pxelinux.cfg/01-<mac with dashes> over TFTP."""

    name: str = "pxelinux"

    def match(self, path: str) -> str | None:
        found = re.fullmatch(r"/?(?:.*/)?pxelinux\.cfg/01-" + _MAC, path, re.IGNORECASE)
        return _mac(found.group(1)) if found else None

    def render(self, spec: BootSpec) -> str:
        if not spec.install:
            return (
                f"# provisiond: {spec.hostname} ({spec.mac}) boots local\n"
                "DEFAULT local\nPROMPT 0\nTIMEOUT 0\n"
                "LABEL local\n  LOCALBOOT 0\n"
            )
        assert spec.kernel and spec.initrd
        # No initrd= in APPEND: syslinux obeys it over INITRD, and would look for the bare name.
        return (
            f"# provisiond: {spec.hostname} ({spec.mac}) installs {spec.os} ({spec.method})\n"
            "DEFAULT install\nPROMPT 0\nTIMEOUT 0\n"
            "LABEL install\n"
            f"  KERNEL {spec.kernel.tftp}\n"
            f"  INITRD {spec.initrd.tftp}\n"
            f"  APPEND {spec.cmdline}\n"
        )


# GRUB's own grub.cfg (Debian's signed grubx64.efi loads `grub.cfg` from its prefix and never
# asks for a per-MAC name): it chains to the per-node config by the MAC GRUB booted from.
GRUB_CHAIN = (
    "# provisiond: every node's GRUB loads its own config, by the MAC it booted from\n"
    "set timeout=0\n"
    "configfile $prefix/grub.cfg-01-$net_default_mac\n"
)


# Where an installed system's EFI loader is, most specific first (shim before GRUB).
UEFI_LOCAL_LOADERS = (
    "/EFI/debian/shimx64.efi", "/EFI/debian/grubx64.efi", "/EFI/rocky/shimx64.efi",
    "/EFI/rocky/grubx64.efi", "/EFI/BOOT/BOOTX64.EFI",
)


@dataclass(frozen=True)
class Grub:
    """GRUB config: `grub.cfg-01-<mac>` (dashes or colons) beside GRUB's prefix over TFTP."""

    name: str = "grub"

    def match(self, path: str) -> str | None:
        found = re.fullmatch(r"/?(?:.*/)?grub\.cfg-01-" + _MAC, path, re.IGNORECASE)
        return _mac(found.group(1)) if found else None

    @staticmethod
    def is_chain(path: str) -> bool:
        """GRUB's own `grub.cfg` under its prefix (any directory): answered with GRUB_CHAIN."""
        return re.fullmatch(r"/?(?:.*/)?grub\.cfg", path, re.IGNORECASE) is not None

    def render(self, spec: BootSpec) -> str:
        if not spec.install:
            # GRUB's `exit` returns success on EFI, and the firmware then stops at its boot
            # manager menu: so chainload the disk's own loader (the first one found).
            loaders = " ".join(UEFI_LOCAL_LOADERS)
            return (
                f"# provisiond: {spec.hostname} ({spec.mac}) boots local\n"
                "set default=0\nset timeout=0\n"
                'menuentry "local disk" {\n'
                f"  for loader in {loaders}; do\n"
                "    if search --no-floppy --set=root --file $loader; then\n"
                "      chainloader $loader\n      boot\n    fi\n"
                "  done\n"
                "  exit\n"
                "}\n"
            )
        assert spec.kernel and spec.initrd
        return (
            f"# provisiond: {spec.hostname} ({spec.mac}) installs {spec.os} ({spec.method})\n"
            "set default=0\nset timeout=0\n"
            f'menuentry "install {spec.os} on {spec.fqdn}" {{\n'
            f"  linux /{spec.kernel.tftp.lstrip('/')} {spec.cmdline}\n"
            f"  initrd /{spec.initrd.tftp.lstrip('/')}\n"
            "}\n"
        )


IPXE = Ipxe()
PXELINUX = Pxelinux()
GRUB = Grub()
BY_NAME: dict[str, BootFormat] = {fmt.name: fmt for fmt in (IPXE, PXELINUX, GRUB)}
# Formats fetched over TFTP, in the order a request path is tried.
TFTP_FORMATS: tuple[BootFormat, ...] = (PXELINUX, GRUB)


def match_tftp(path: str) -> tuple[BootFormat, str] | None:
    """(format, mac) for a per-node boot config name over TFTP, else None."""
    for fmt in TFTP_FORMATS:
        mac = fmt.match(path)
        if mac is not None:
            return fmt, mac
    return None
