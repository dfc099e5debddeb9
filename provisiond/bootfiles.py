"""Boot files per node, decided from the store's current state (nothing written to disk).

Shared by the HTTP service (`/boot/<mac>.ipxe`) and the TFTP server's responder
(`pxelinux.cfg/01-<mac>`, `grub.cfg-01-<mac>`, boot loaders by name), so every path a
firmware can take says the same thing: install while netboot is on, boot local once it is off.
"""

from __future__ import annotations

import logging
from pathlib import Path

from provisiond import bootconfig
from provisiond.bootconfig import BootTarget
from provisiond.config import Config
from provisiond.images.boot import ipxe_deploy
from provisiond.inventory import Inventory, Node, normalize_mac
from provisiond.lifecycle import Source, State
from provisiond.logs import log_event
from provisiond.store import Store

log = logging.getLogger("provisiond.boot")


def install_path(node: Node) -> str:
    """The URL path of the node's preseed (Debian family) or kickstart (RHEL family)."""
    return f"/preseed/{node.hostname}" if node.os_name.startswith("debian") else f"/ks/{node.hostname}"


class BootFiles:
    """Renders a node's boot configs from inventory + store; marks `pxe` on a netboot fetch."""

    def __init__(self, inventory: Inventory, store: Store, config: Config, base_url: str) -> None:
        self.inventory = inventory
        self.store = store
        self.config = config
        self.base_url = base_url.rstrip("/")

    def target(self, node: Node, base_url: str | None = None) -> BootTarget:
        base = (base_url or self.base_url).rstrip("/")
        site = self.inventory.site
        assets = self.config.assets.get(node.os_name)
        if assets is None:
            raise LookupError(f"no boot assets configured for os {node.os_name} ([os.{node.os_name}])")
        return BootTarget(
            hostname=node.hostname, domain=site.domain, mac=node.mac, os=node.os_name,
            ip=str(node.ip), netmask=str(site.network.netmask), gateway=str(site.gateway),
            dns=[str(server) for server in site.dns],
            install_url=base + install_path(node),
            kernel_url=f"{base}/boot/{node.os_name}/{assets.kernel.name}",
            initrd_url=f"{base}/boot/{node.os_name}/{assets.initrd.name}",
            tftp_kernel=assets.tftp_kernel, tftp_initrd=assets.tftp_initrd,
            repo=site.mirror(node.os_name) if not node.os_name.startswith("debian") else "",
            extra_cmdline=assets.cmdline,
        )

    def _netboot(self, node: Node, source: Source, what: str, peer: str) -> bool:
        """Whether the node installs now; a netboot fetch is the sign the node is at `pxe`."""
        record = self.store.node(node.hostname)
        if record.netboot and record.state in (State.NEW, State.POWERING_ON):
            self.store.try_transition(node.hostname, State.PXE, source, detail={"file": what})
        log_event(log, "boot-config", host=node.hostname, file=what, peer=peer,
                  netboot="on" if record.netboot else "off", state=str(record.state))
        return record.netboot

    def ipxe(self, mac: str, peer: str = "", base_url: str | None = None) -> str | None:
        """The iPXE script for a MAC (any common spelling), or None for an unknown MAC."""
        try:
            node = self.inventory.by_mac(normalize_mac(mac))
        except ValueError:
            return None
        if node is None:
            return None
        if self._netboot(node, Source.HTTP, f"{node.mac}.ipxe", peer):
            if node.install_method == "image":
                assets = self.config.assets.get(node.os_name)
                return ipxe_deploy((base_url or self.base_url), node.hostname, node.mac, node.os_name,
                                   assets.cmdline if assets else "")
            return bootconfig.ipxe_install(self.target(node, base_url))
        return bootconfig.ipxe_local(node.hostname, node.mac)

    def tftp_responder(self, path: str, peer: tuple[str, int] | str) -> bytes | Path | None:
        """TFTP hook: per-node pxelinux/GRUB configs (generated), the boot loaders (the
        packaged file, streamed by the server), or None: from the TFTP root."""
        peer_text = peer if isinstance(peer, str) else f"{peer[0]}:{peer[1]}"
        request = bootconfig.parse_config_request(path)
        if request is not None:
            kind, mac = request
            node = self.inventory.by_mac(mac)
            if node is None:
                return None
            netboot = self._netboot(node, Source.TFTP, path, peer_text)
            if kind == "pxelinux":
                text = (bootconfig.pxelinux_install(self.target(node)) if netboot
                        else bootconfig.pxelinux_local(node.hostname, node.mac))
            else:
                text = (bootconfig.grub_install(self.target(node)) if netboot
                        else bootconfig.grub_local(node.hostname, node.mac))
            return text.encode()
        loader = self.config.loaders.get(Path(path.lstrip("/")).as_posix())
        if loader is not None and loader.is_file():
            return loader
        return None
