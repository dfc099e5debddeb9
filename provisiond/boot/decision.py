"""The one boot decision: given a node, its state and the asking client, what does it boot?

Pure (no store, no sockets), in the spirit of pixiecore's Booter.BootSpec and smee's
GetByMac: DHCP asks it which boot file to hand out, TFTP and HTTP ask it what a node's boot
config says, and all three get the same answer because nothing else decides.

    install  = netboot on and the state is one that installs (lifecycle.installs)
    loader   = what DHCP hands this client (a TFTP name or an HTTP URL), or None
    kernel, initrd, cmdline, answer_url = the installer to start (install only)

Boot local: BIOS gets no boot file (the firmware goes on to its disk, as always); UEFI gets
GRUB, whose per-node config chainloads the disk's own EFI loader, because EDK2 without a boot
file retries DHCP for about 60 s before it moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from urllib.parse import urlsplit

from provisiond.boot.methods import InstallTarget, method_for
from provisiond.dhcp import options as o
from provisiond.lifecycle import State, installs


class Client(StrEnum):
    """Who asks DHCP for a boot file (from options 93, 60 and 77)."""

    BIOS_PXE = "bios-pxe"  # a BIOS PXE ROM
    UEFI_PXE = "uefi-pxe"  # EDK2's own PXE client (arch 7 or 9)
    UEFI_HTTP = "uefi-http"  # UEFI HTTP boot (arch 16)
    IPXE_BIOS = "ipxe-bios"  # iPXE (user class "iPXE") on BIOS: a NIC ROM or undionly.kpxe
    IPXE_UEFI = "ipxe-uefi"  # iPXE on UEFI: ipxe.efi


def classify(archs: tuple[int, ...], vendor_class: str, ipxe: bool) -> Client | None:
    """The kind of boot client, or None for an architecture that has no loader here."""
    efi = o.ARCH_EFI_BC in archs or o.ARCH_EFI_X86_64 in archs
    if ipxe:
        return Client.IPXE_UEFI if efi else Client.IPXE_BIOS
    if o.ARCH_EFI_X86_64_HTTP in archs or vendor_class.startswith("HTTPClient"):
        return Client.UEFI_HTTP
    if efi:
        return Client.UEFI_PXE
    if not archs or o.ARCH_BIOS in archs:
        return Client.BIOS_PXE
    return None


# Loaders that are iPXE: once loaded they ask DHCP again (user class iPXE) for their script.
IPXE_LOADERS = frozenset({"undionly.kpxe", "undionly.kkpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi"})


@dataclass(frozen=True)
class Loaders:
    """Which boot loader PXE firmware gets (names of provisiond.toml [loaders])."""

    bios: str = "undionly.kpxe"  # or pxelinux.0
    uefi: str = "ipxe.efi"  # or grubx64.efi
    # What UEFI PXE firmware gets to boot local: GRUB, whose per-node config chainloads the
    # disk's own EFI loader. (iPXE cannot: its `exit` either stops at the firmware's boot
    # menu, or, with an error code, hangs in Debian's iPXE under OVMF; measured.)
    uefi_local: str = "grubx64.efi"

    def for_firmware(self, uefi: bool) -> str:
        return self.uefi if uefi else self.bios


@dataclass(frozen=True)
class Asset:
    """An installer file, as iPXE fetches it (HTTP) and as pxelinux/GRUB fetch it (TFTP)."""

    url: str
    tftp: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class OsBoot:
    """One OS's installer files: their names over HTTP and their paths over TFTP."""

    kernel_name: str
    initrd_name: str
    tftp_kernel: str
    tftp_initrd: str
    cmdline: str = ""  # extra kernel arguments from provisiond.toml


@dataclass(frozen=True)
class Network:
    """The site's addressing as the installer's command line states it."""

    domain: str
    netmask: str
    gateway: str
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeFacts:
    """What the decision needs to know about a node (from the inventory and the store)."""

    hostname: str
    mac: str
    ip: str
    os: str
    state: State
    netboot: bool
    mirror: str = ""
    method: str | None = None  # an install method the node asks for (else its OS's default)


@dataclass(frozen=True)
class BootSpec:
    """The answer: install (kernel, initrd, cmdline, answer URL) or boot local, and the loader."""

    hostname: str
    mac: str
    install: bool
    loader: str | None = None  # DHCP's boot file for the asking client; None: no boot file
    method: str | None = None
    os: str = ""
    fqdn: str = ""
    kernel: Asset | None = None
    initrd: Asset | None = None
    cmdline: str = ""  # installer arguments (renderers add initrd= where a loader needs it)
    answer_url: str | None = None


def base_url_for(base_url: str, network: IPv4Network, server: IPv4Address) -> str:
    """The base URL a node reaches provisiond at: the serving address when it is on the node's
    network; else the server address of the node's network (a relayed subnet: its nodes reach
    the server through their router, at the address the relay forwards to)."""
    parts = urlsplit(base_url)
    try:
        host = IPv4Address(parts.hostname or "")
    except ValueError:
        return base_url  # no URL yet, or a host name: as configured
    if host in network or host == server:
        return base_url
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{server}{port}").geturl()


def ipxe_script_url(base_url: str, mac: str) -> str:
    return f"{base_url.rstrip('/')}/boot/{mac}.ipxe"


def loader_for(client: Client | None, install: bool, mac: str, base_url: str,
               loaders: Loaders) -> str | None:
    """The DHCP boot file: iPXE gets its script, firmware gets a loader; BIOS local gets none.

    iPXE as the NIC's own ROM (QEMU's, say) is firmware too: on a site whose loader is not
    iPXE (pxelinux, GRUB) it gets that loader, like any PXE ROM.
    """
    base = base_url.rstrip("/")
    if client is None or (not install and client in (Client.BIOS_PXE, Client.IPXE_BIOS)):
        return None
    if client is Client.UEFI_HTTP:
        return f"{base}/boot/ipxe.efi"
    uefi = client in (Client.UEFI_PXE, Client.IPXE_UEFI)
    if uefi and not install:
        return loaders.uefi_local
    loader = loaders.for_firmware(uefi)
    if client in (Client.IPXE_BIOS, Client.IPXE_UEFI) and loader in IPXE_LOADERS:
        return ipxe_script_url(base, mac)
    return loader


def decide(node: NodeFacts, client: Client | None, base_url: str, loaders: Loaders,
           network: Network, os_boot: dict[str, OsBoot]) -> BootSpec:
    """The boot decision for `node` as `client` asks (None: a boot config fetch, no loader).

    Raises LookupError when the node should install but its OS has no boot files configured.
    """
    install = installs(node.state, node.netboot)
    loader = loader_for(client, install, node.mac, base_url, loaders)
    fqdn = f"{node.hostname}.{network.domain}" if network.domain else node.hostname
    if not install:
        return BootSpec(node.hostname, node.mac, False, loader, os=node.os, fqdn=fqdn)
    files = os_boot.get(node.os)
    method = method_for(node.os, node.method)
    if files is None and method.boot_files is None:
        raise LookupError(f"no boot assets configured for os {node.os} ([os.{node.os}])")
    base = base_url.rstrip("/")
    answer_url = base + method.answer_path(node.hostname)
    target = InstallTarget(
        hostname=node.hostname, domain=network.domain, mac=node.mac, ip=node.ip,
        netmask=network.netmask, gateway=network.gateway, answer_url=answer_url,
        dns=network.dns, mirror=node.mirror, server_url=base, os=node.os,
    )
    extra = files.cmdline if files is not None else ""
    args = method.cmdline(target) + ([extra] if extra else [])
    if method.boot_files is not None:  # the method boots its own kernel (the deploy ramdisk)
        kernel_path, initrd_path = method.boot_files(node.os)
        kernel, initrd = Asset(f"{base}/{kernel_path}", kernel_path), Asset(f"{base}/{initrd_path}", initrd_path)
    else:
        assert files is not None
        kernel = Asset(f"{base}/boot/{node.os}/{files.kernel_name}", files.tftp_kernel)
        initrd = Asset(f"{base}/boot/{node.os}/{files.initrd_name}", files.tftp_initrd)
    return BootSpec(
        node.hostname, node.mac, True, loader, method=method.name, os=node.os, fqdn=fqdn,
        kernel=kernel, initrd=initrd, cmdline=" ".join(args), answer_url=answer_url,
    )
