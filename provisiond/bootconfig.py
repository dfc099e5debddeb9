"""Per-node boot configs (iPXE script, pxelinux, GRUB), rendered from plain values.

Pure functions: no store, no sockets. The caller (provisiond.bootfiles) decides from the
store whether a node installs (netboot on) or boots its local disk (netboot off).

The installer gets its network settings on the kernel command line (static address, mask,
gateway, DNS), so it needs no DHCP of its own and fetches the preseed/kickstart at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# pxelinux asks for pxelinux.cfg/01-<mac with dashes>; GRUB for grub.cfg-01-<mac> under its prefix.
_PXELINUX = re.compile(r"^/?(?:.*/)?pxelinux\.cfg/01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$", re.IGNORECASE)
_GRUB = re.compile(r"^/?(?:.*/)?grub\.cfg-01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$", re.IGNORECASE)


@dataclass(frozen=True)
class BootTarget:
    """Everything a boot config needs to start one node's installer."""

    hostname: str
    domain: str
    mac: str
    os: str
    ip: str
    netmask: str
    gateway: str
    install_url: str
    kernel_url: str
    initrd_url: str
    tftp_kernel: str
    tftp_initrd: str
    dns: list[str] = field(default_factory=list)
    repo: str = ""
    extra_cmdline: str = ""

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}" if self.domain else self.hostname


def installer_cmdline(target: BootTarget, initrd_name: str) -> str:
    """Kernel arguments for the OS installer: where the answers are, and a static address."""
    if target.os.startswith("debian"):
        args = [
            f"initrd={initrd_name}", "auto=true", "priority=critical", f"url={target.install_url}",
            f"hostname={target.hostname}", f"domain={target.domain}", "interface=auto",
            "netcfg/disable_autoconfig=true", f"netcfg/get_ipaddress={target.ip}",
            f"netcfg/get_netmask={target.netmask}", f"netcfg/get_gateway={target.gateway}",
            "netcfg/confirm_static=true",
        ]
        if target.dns:
            args.append(f"netcfg/get_nameservers={target.dns[0]}")
    else:
        args = [
            f"initrd={initrd_name}", f"inst.ks={target.install_url}",
            f"ifname=bootnet:{target.mac}",
            f"ip={target.ip}::{target.gateway}:{target.netmask}:{target.fqdn}:bootnet:none",
            "inst.text",
        ]
        if target.repo:
            args.append(f"inst.repo={target.repo}")
        args += [f"nameserver={server}" for server in target.dns]
    if target.extra_cmdline:
        args.append(target.extra_cmdline)
    return " ".join(args)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def ipxe_install(target: BootTarget) -> str:
    """iPXE script that boots the installer over HTTP."""
    cmdline = installer_cmdline(target, _basename(target.initrd_url))
    return (
        "#!ipxe\n"
        f"# provisiond: {target.hostname} ({target.mac}) installs {target.os}\n"
        f"echo provisiond: installing {target.os} on {target.fqdn}\n"
        f"kernel {target.kernel_url} {cmdline}\n"
        f"initrd {target.initrd_url}\n"
        "boot\n"
    )


def ipxe_local(hostname: str, mac: str) -> str:
    """iPXE script that leaves the network boot: UEFI returns to the firmware's boot order,
    BIOS boots the first disk."""
    return (
        "#!ipxe\n"
        f"# provisiond: {hostname} ({mac}) netboot off: boot local\n"
        f"echo provisiond: {hostname} boots from its local disk\n"
        "iseq ${platform} efi && exit ||\n"
        "sanboot --no-describe --drive 0x80 || exit\n"
    )


def pxelinux_install(target: BootTarget) -> str:
    cmdline = installer_cmdline(target, _basename(target.tftp_initrd))
    return (
        f"# provisiond: {target.hostname} ({target.mac}) installs {target.os}\n"
        "DEFAULT install\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL install\n"
        f"  KERNEL {target.tftp_kernel}\n"
        f"  INITRD {target.tftp_initrd}\n"
        f"  APPEND {cmdline}\n"
    )


def pxelinux_local(hostname: str, mac: str) -> str:
    return (
        f"# provisiond: {hostname} ({mac}) netboot off: boot local\n"
        "DEFAULT local\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL local\n  LOCALBOOT 0\n"
    )


def grub_install(target: BootTarget) -> str:
    cmdline = installer_cmdline(target, _basename(target.tftp_initrd))
    return (
        f"# provisiond: {target.hostname} ({target.mac}) installs {target.os}\n"
        "set default=0\nset timeout=0\n"
        f'menuentry "install {target.os} on {target.fqdn}" {{\n'
        f"  linux /{target.tftp_kernel.lstrip('/')} {cmdline}\n"
        f"  initrd /{target.tftp_initrd.lstrip('/')}\n"
        "}\n"
    )


def grub_local(hostname: str, mac: str) -> str:
    return (
        f"# provisiond: {hostname} ({mac}) netboot off: boot local\n"
        "set default=0\nset timeout=0\n"
        'menuentry "local disk" {\n  exit\n}\n'
    )


def parse_config_request(path: str) -> tuple[str, str] | None:
    """('pxelinux'|'grub', mac) for a per-node config file name, else None."""
    for kind, pattern in (("pxelinux", _PXELINUX), ("grub", _GRUB)):
        match = pattern.match(path)
        if match:
            return kind, match.group(1).lower().replace("-", ":")
    return None
