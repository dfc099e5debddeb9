"""The boot decision with its inputs read: inventory + store + config -> BootSpec, rendered.

DHCP (the boot file), TFTP (pxelinux/GRUB configs, loaders, installer files) and HTTP
(iPXE scripts) each call one method here; each reports what it saw as a lifecycle event, and
only a fetch that starts an install counts as a sign of the node's progress.
"""

from __future__ import annotations

import logging
from pathlib import Path

from provisiond.boot import files
from provisiond.boot.decision import (
    BootSpec,
    Client,
    Loaders,
    Network,
    NodeFacts,
    OsBoot,
    base_url_for,
    decide,
)
from provisiond.config import Config
from provisiond.images.cache import ImageCache
from provisiond.inventory import Inventory, Node
from provisiond.lifecycle import Event, Source
from provisiond.logs import log_event
from provisiond.store import Store

log = logging.getLogger("provisiond.boot")
# The inventory's `install` -> the install method asked for (installer: the OS's default).
INSTALL_METHOD = {"installer": None, "image": "image"}


class BootService:
    """Answers "what does this node boot?" for DHCP, TFTP and HTTP from the current state."""

    def __init__(self, inventory: Inventory, store: Store, config: Config, base_url: str) -> None:
        self.inventory = inventory
        self.store = store
        self.config = config
        self.base_url = base_url.rstrip("/")
        # The addressing of each network of the site, as the installer's command line states it.
        self.networks = {
            net.network: Network(domain=net.domain, netmask=str(net.network.netmask),
                                 gateway=str(net.gateway), dns=tuple(str(server) for server in net.dns))
            for net in inventory.site.all_networks
        }
        self.loaders = Loaders(bios=config.bios_loader, uefi=config.uefi_loader,
                               uefi_local=config.uefi_local_loader)
        self.os_boot = {
            name: OsBoot(assets.kernel.name, assets.initrd.name, assets.tftp_kernel,
                         assets.tftp_initrd, assets.cmdline)
            for name, assets in config.assets.items()
        }
        # TFTP names of the installer files (for pxelinux and GRUB) -> the files on disk.
        self._tftp_assets = {
            tftp: path for assets in config.assets.values()
            for tftp, path in ((assets.tftp_kernel, assets.kernel), (assets.tftp_initrd, assets.initrd))
            if tftp
        }

    def facts(self, node: Node) -> NodeFacts:
        record = self.store.node(node.hostname)
        mirror = self.inventory.site.mirror(node.os_name)
        return NodeFacts(node.hostname, node.mac, str(node.ip), node.os_name, record.state,
                         record.netboot, mirror=mirror, method=INSTALL_METHOD.get(node.install_method))

    def spec(self, node: Node, client: Client | None = None, base_url: str | None = None) -> BootSpec:
        """The decision for `node`, with the URLs and addressing of the node's own network."""
        home = self.inventory.network(node)
        base = base_url_for(base_url or self.base_url, home.network, home.server)
        return decide(self.facts(node), client, base, self.loaders, self.networks[home.network],
                      self.os_boot)

    # -- DHCP ------------------------------------------------------------------------------

    def for_dhcp(self, node: Node, client: Client | None) -> BootSpec:
        """The boot answer for a DHCP boot request (spec.loader is the boot file)."""
        return self.spec(node, client)

    def dhcp_answered(self, spec: BootSpec, boot_file: str) -> None:
        """DHCP handed out `boot_file`: an installer's loader is a sign the node is at PXE."""
        if spec.install:
            self.store.observe(spec.hostname, Event.DHCP_BOOT_REQUEST, Source.DHCP,
                               detail={"boot_file": boot_file})

    # -- HTTP and TFTP boot configs --------------------------------------------------------

    def _fetched(self, node: Node, fmt: str, what: str, peer: str, source: Source,
                 base_url: str | None = None) -> str:
        spec = self.spec(node, None, base_url)
        if spec.install:
            self.store.observe(node.hostname, Event.BOOT_CONFIG_FETCHED, source,
                               detail={"file": what})
        log_event(log, "boot-config", host=node.hostname, file=what, peer=peer,
                  boot="install" if spec.install else "local")
        return files.BY_NAME[fmt].render(spec)

    def answer_fetched(self, node: Node, what: str, peer: str) -> bool:
        """The node itself fetched its answer file (or deploy settings): a sign its installer
        runs, but only if the boot decision would hand it the installer now (netboot on, an
        installable state). An unauthenticated fetch moves nothing the boot would not."""
        if not self.spec(node).install:
            log_event(log, "answer-fetch-ignored", host=node.hostname, file=what, peer=peer,
                      msg="not installing now (netboot off or past its install): state kept")
            return False
        self.store.observe(node.hostname, Event.ANSWER_FETCHED, Source.HTTP,
                           detail={"fetched": what, "peer": peer})
        return True

    def ipxe(self, mac: str, peer: str = "", base_url: str | None = None) -> str | None:
        """The iPXE script for a MAC (any common spelling), or None for an unknown MAC."""
        node = self.inventory.by_mac(mac)
        if node is None:
            return None
        return self._fetched(node, "ipxe", f"{node.mac}.ipxe", peer, Source.HTTP, base_url)

    def tftp_responder(self, path: str, peer: tuple[str, int] | str) -> bytes | Path | None:
        """TFTP: per-node pxelinux/GRUB configs (generated), GRUB's chain config, the boot
        loaders and installer files (the packaged files), or None: from the TFTP root."""
        peer_text = peer if isinstance(peer, str) else f"{peer[0]}:{peer[1]}"
        matched = files.match_tftp(path)
        if matched is not None:
            fmt, mac = matched
            node = self.inventory.by_mac(mac)
            if node is None:
                return None
            return self._fetched(node, fmt.name, path, peer_text, Source.TFTP).encode()
        if files.GRUB.is_chain(path):
            return files.GRUB_CHAIN.encode()
        name = path.lstrip("/")
        ramdisk = ImageCache(self.config.image_cache).ramdisk_file(name)
        for served in (self.config.loaders.get(Path(name).as_posix()), self._tftp_assets.get(name), ramdisk):
            if served is not None and served.is_file():
                return served
        return None
