"""What a node installing by image boots: the deploy ramdisk, with the server URL, its host
name and its MAC on the kernel command line (nothing secret: the ramdisk fetches its token
from /deploy/<host>/env, which is served only to the node's address). Pure."""

from __future__ import annotations

RAMDISK_KERNEL = "vmlinuz"
RAMDISK_INITRD = "initrd.img"


def ramdisk_urls(base_url: str, os_name: str) -> tuple[str, str]:
    base = f"{base_url.rstrip('/')}/images/ramdisk/{os_name}"
    return f"{base}/{RAMDISK_KERNEL}", f"{base}/{RAMDISK_INITRD}"


def deploy_cmdline(base_url: str, hostname: str, mac: str, extra: str = "") -> str:
    args = [f"initrd={RAMDISK_INITRD}", f"provisiond.url={base_url.rstrip('/')}",
            f"provisiond.host={hostname}", f"provisiond.mac={mac}"]
    return " ".join(args + ([extra] if extra else []))


def ipxe_deploy(base_url: str, hostname: str, mac: str, os_name: str, extra_cmdline: str = "") -> str:
    """iPXE script that boots the deploy ramdisk over HTTP."""
    kernel, initrd = ramdisk_urls(base_url, os_name)
    return (
        "#!ipxe\n"
        f"# provisiond: {hostname} ({mac}) installs {os_name} by image\n"
        f"echo provisiond: deploying the {os_name} image on {hostname}\n"
        f"kernel {kernel} {deploy_cmdline(base_url, hostname, mac, extra_cmdline)}\n"
        f"initrd {initrd}\n"
        "boot\n"
    )
