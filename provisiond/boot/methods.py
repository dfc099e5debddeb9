"""The install methods, as data: how a node's OS gets installed.

Each method owns its answer file (route and template) and the installer's kernel command
line. Which method a node uses is looked up here, never guessed from the OS name elsewhere;
adding a method (the image install, say) is adding one entry to METHODS and, for an OS whose
default it is, one to DEFAULT_METHOD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InstallTarget:
    """What an installer's command line may need to know about one node."""

    hostname: str
    domain: str
    mac: str
    ip: str
    netmask: str
    gateway: str
    answer_url: str
    dns: tuple[str, ...] = ()
    mirror: str = ""
    server_url: str = ""
    os: str = ""

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}" if self.domain else self.hostname


@dataclass(frozen=True)
class InstallMethod:
    """One way to install: its answer file (URL route + template) and its kernel arguments."""

    name: str
    answer_route: str  # the answer file is served at <answer_route>/<hostname>[/<answer_file>]
    template: str | None  # Jinja2 template of the answer file (None: the method serves its own)
    cmdline: Callable[[InstallTarget], list[str]] = field(compare=False)
    summary: str = ""
    answer_file: str = ""
    # (kernel path, initrd path) under the server URL for an OS, when the method boots its own
    # kernel (the image method's deploy ramdisk) instead of the OS installer's.
    boot_files: Callable[[str], tuple[str, str]] | None = field(default=None, compare=False)

    def answer_path(self, hostname: str) -> str:
        return f"{self.answer_route}/{hostname}" + (f"/{self.answer_file}" if self.answer_file else "")


def preseed_cmdline(target: InstallTarget) -> list[str]:
    """debian-installer: fully automatic, answers from the preseed, a static address."""
    args = [
        "auto=true", "priority=critical", f"url={target.answer_url}",
        f"hostname={target.hostname}", f"domain={target.domain}", "interface=auto",
        "netcfg/disable_autoconfig=true", f"netcfg/get_ipaddress={target.ip}",
        f"netcfg/get_netmask={target.netmask}", f"netcfg/get_gateway={target.gateway}",
        "netcfg/confirm_static=true",
    ]
    if target.dns:
        args.append(f"netcfg/get_nameservers={target.dns[0]}")
    return args


def kickstart_cmdline(target: InstallTarget) -> list[str]:
    """Anaconda: the kickstart, the boot interface by MAC with a static address, the repo."""
    args = [
        f"inst.ks={target.answer_url}", f"ifname=bootnet:{target.mac}",
        f"ip={target.ip}::{target.gateway}:{target.netmask}:{target.fqdn}:bootnet:none",
        "inst.text",
    ]
    if target.mirror:
        args.append(f"inst.repo={target.mirror}")
    return args + [f"nameserver={server}" for server in target.dns]


def image_cmdline(target: InstallTarget) -> list[str]:
    """The deploy ramdisk: where the server is, who it is (nothing secret: its token comes from
    the answer, served only to the node's address)."""
    return [f"provisiond.url={target.server_url}", f"provisiond.host={target.hostname}",
            f"provisiond.mac={target.mac}"]


def ramdisk_paths(os_name: str) -> tuple[str, str]:
    """The deploy ramdisk's files as served (http/deploy.py) and as TFTP names alike."""
    return f"images/ramdisk/{os_name}/vmlinuz", f"images/ramdisk/{os_name}/initrd.img"


METHODS: dict[str, InstallMethod] = {
    method.name: method
    for method in (
        InstallMethod("preseed", "/preseed", "debian12.cfg.j2", preseed_cmdline,
                      "debian-installer with a preseed (Debian family)"),
        InstallMethod("kickstart", "/ks", "rocky9.ks.j2", kickstart_cmdline,
                      "Anaconda with a kickstart (RHEL family)"),
        InstallMethod("image", "/deploy", None, image_cmdline,
                      "provisiond's deploy ramdisk writes a root image built by `image build`",
                      answer_file="env", boot_files=ramdisk_paths),
    )
}

# The method each OS installs with unless the node asks for another.
DEFAULT_METHOD: dict[str, str] = {"debian12": "preseed", "rocky9": "kickstart"}


def method_for(os_name: str, requested: str | None = None) -> InstallMethod:
    """The install method of a node: the one it asks for, else its OS's default."""
    name = requested or DEFAULT_METHOD.get(os_name)
    if name is None or name not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise LookupError(f"no install method {name or 'for os ' + os_name!r} (known: {known})")
    return METHODS[name]


def method_by_route(route: str) -> InstallMethod | None:
    """The method whose answer file is served under `route` (e.g. "/ks")."""
    return next((m for m in METHODS.values() if m.answer_route == route), None)
