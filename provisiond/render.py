"""Renders a node's installer configuration (kickstart or preseed) from Jinja2 templates.

The templates live in `kickstarts/` and `preseeds/` at the top of the repository (inside the
package, under `_data/`, when installed from a wheel); an operator's template directory is
searched first, so any template or partial can be overridden by one of the same name.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from provisiond.boot.methods import METHODS, method_for
from provisiond.errors import UserError
from provisiond.images.layout_script import render_layout_script
from provisiond.inventory import Inventory, Node
from provisiond.layouts import MIB, Layout, LayoutError, plan_layout

MB_PER_MIB = MIB / 1_000_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(value: Any) -> Any:
    """Jinja2 `finalize` for answer files: no expression may write a control character. Both
    formats are line-based (preseed d-i lines, kickstart commands, shell): a value with a
    newline would add a line of its own making, so it is refused at rendering, whatever let
    it through before (the inventory refuses it first). Manifests are YAML whose macros write
    whole blocks; their values go through `tojson`, which escapes newlines."""
    if isinstance(value, str) and _CONTROL.search(value):
        raise jinja2.TemplateRuntimeError(
            f"the value {value[:60]!r} holds a control character, which would split a line "
            "of this file: fix it in the inventory")
    return value


@dataclass(frozen=True)
class ServerInfo:
    """Where the installer calls back, the node's token and its agent credential (None: withheld)."""

    url: str
    token: str | None = None
    agent_credential: str | None = None

    def events_url(self, hostname: str) -> str:
        return f"{self.url.rstrip('/')}/api/v1/nodes/{hostname}/events"


def builtin_template_dirs() -> list[Path]:
    package = Path(__file__).resolve().parent
    for base in (package / "_data", package.parent):
        dirs = [base / "kickstarts", base / "preseeds"]
        if all(d.is_dir() for d in dirs):
            return dirs
    raise UserError(f"provisiond's templates are missing (looked in {package / '_data'} and {package.parent})")


def partman_mb(mib: int | None) -> int:
    """MiB -> partman's MB (10^6 bytes), rounded down so LVM's 4 MiB extents round back up."""
    return 0 if mib is None else math.floor(mib * MB_PER_MIB)


class Renderer:
    """Renders kickstarts and preseeds for the nodes of one inventory."""

    def __init__(self, inventory: Inventory, template_dirs: list[Path] | None = None) -> None:
        self.inventory = inventory
        search = [Path(d) for d in (template_dirs or [])] + builtin_template_dirs()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in search]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            finalize=one_line,
        )
        self.env.filters["shquote"] = lambda value: shlex.quote(str(value))
        self.env.filters["mb"] = partman_mb

    def layout(self, node: Node) -> Layout:
        try:
            return plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
        except LayoutError as exc:
            raise UserError(f"{node.hostname}: {exc}") from None

    def context(self, node: Node, server: ServerInfo | None) -> dict[str, Any]:
        site = self.inventory.site
        home = self.inventory.network(node)  # the node's own network (site.network or a relayed one)
        return {
            "node": node,
            "site": site,
            "layout": self.layout(node),
            "netmask": str(home.network.netmask),
            "prefixlen": home.network.prefixlen,
            "gateway": str(home.gateway),
            "dns": [str(address) for address in home.dns],
            "ntp": list(home.ntp),
            "server": server,
            "events_url": server.events_url(node.hostname) if server else None,
        }

    def render(self, kind: str, node: Node, server: ServerInfo | None = None) -> str:
        """The answer file of install method `kind` (preseed, kickstart, ...) for `node`."""
        method = METHODS.get(kind)
        if method is None:
            known = ", ".join(sorted(METHODS))
            raise UserError(f"unknown installer config {kind!r} (expected one of: {known})")
        if method.template is None:
            raise UserError(f"the {kind} method has no answer file (render deploy HOST prints its layout script)")
        try:
            template = self.env.get_template(method.template)
            return template.render(self.context(node, server))
        except jinja2.TemplateError as exc:
            syntax = isinstance(exc, jinja2.TemplateSyntaxError)
            where = f"{exc.filename}:{exc.lineno}" if syntax else method.template
            raise UserError(f"template {where}: {exc.message}") from None

    def kickstart(self, node: Node, server: ServerInfo | None = None) -> str:
        return self.render("kickstart", node, server)

    def preseed(self, node: Node, server: ServerInfo | None = None) -> str:
        return self.render("preseed", node, server)

    def deploy_script(self, node: Node, disk_bytes: int | None = None) -> str:
        """The image method's layout script for the node's disk (`disk_bytes`: the size the
        deploy ramdisk found, needed when the inventory gives none; else the inventory's)."""
        size = node.disk.size_bytes if disk_bytes is None else disk_bytes
        if size is None:
            raise UserError(
                f"{node.hostname}: disk.size is not in the inventory; the deploy ramdisk sends its "
                "disk's size (to preview, give one: render deploy HOST --disk-size 250G)"
            )
        try:
            layout = plan_layout(node.role, size, device=node.disk.device, uefi=node.uefi)
        except LayoutError as exc:
            raise UserError(f"{node.hostname}: {exc}") from None
        return render_layout_script(layout, node.hostname)

    def install_config(self, node: Node, server: ServerInfo | None = None) -> tuple[str, str]:
        """(method name, answer file) for the node's install method."""
        method = method_for(node.os_name)
        return method.name, self.render(method.name, node, server)
