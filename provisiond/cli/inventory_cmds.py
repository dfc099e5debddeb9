"""`check`, `layout` and `render` (kickstart, preseed, manifest): work on the inventory file alone
(no server needed; a manifest's secrets are masked)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provisiond.boot.methods import METHODS
from provisiond.config import effective_config
from provisiond.errors import UserError
from provisiond.inventory import ROLES, Inventory, load_inventory, parse_size
from provisiond.layouts import Layout, LayoutError, plan_layout
from provisiond.manifests import ManifestService
from provisiond.render import Renderer


def inventory_from_args(args: argparse.Namespace) -> Inventory:
    """The inventory named by --inventory (or the config file's, or ./inventory.yaml)."""
    return load_inventory(effective_config(args).inventory)


def register(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser("check", help="validate the inventory; print every problem")
    check.set_defaults(func=run_check)

    layout = commands.add_parser("layout", help="show the partition layout of a node or role")
    target = layout.add_mutually_exclusive_group(required=True)
    target.add_argument("host", nargs="?", help="a node of the inventory")
    target.add_argument("--role", choices=ROLES, help="a role, with --disk")
    layout.add_argument("--disk", help="disk size for --role (e.g. 250G, 80GB, 74.5GiB)")
    layout.add_argument("--uefi", action="store_true", help="with --role: UEFI (GPT + ESP)")
    layout.set_defaults(func=run_layout)

    render = commands.add_parser(
        "render", help="print a node's answer file (kickstart, preseed), deploy layout script "
        "(image method) or role manifest (secrets masked)")
    render.add_argument("kind", choices=(*sorted(m for m in METHODS if METHODS[m].template), "deploy", "manifest"),
                        help="an install method's answer file, the deploy layout script, or the manifest")
    render.add_argument("host")
    render.add_argument(
        "--disk-size", metavar="SIZE",
        help="deploy: plan for a disk of this size (e.g. 40G) instead of the inventory's",
    )
    render.add_argument(
        "--templates", type=Path, action="append", default=[], metavar="DIR",
        help="a directory of templates that override the built-in ones (repeatable)",
    )
    render.set_defaults(func=run_render)


def run_check(args: argparse.Namespace) -> int:
    inventory = inventory_from_args(args)
    for warning in inventory.warnings:
        print(f"{inventory.path}: warning: {warning}")
    roles = {role: sum(node.role == role for node in inventory.nodes) for role in ROLES}
    summary = ", ".join(f"{count} {role}" for role, count in roles.items() if count)
    print(f"{inventory.path}: OK: site {inventory.site.name}, {len(inventory.nodes)} nodes ({summary})")
    return 0


def format_layout(layout: Layout) -> str:
    size = f"{layout.disk_mib} MiB" if layout.disk_mib else "size unknown: data volumes grow to fill it"
    lines = [f"{layout.role} layout on {layout.device} ({size}), {layout.label} label", "",
             f"{'Device':<14}{'Size (MiB)':>11}  {'Mount point / volume':<24}  Type"]

    def row(name: str, size_mib: int | None, where: str, kind: str) -> None:
        shown = "rest" if size_mib is None else str(size_mib)
        lines.append(f"{name:<14}{shown:>11}  {where:<24}  {kind}")

    lines.append("LVM volume groups")
    for vg in layout.volume_groups:
        row(vg.name, vg.size_mib, "", "VG")
        for lv in vg.logical_volumes:
            row(f"  {lv.name}", lv.size_mib, lv.mount or "", lv.fstype)
        if not vg.logical_volumes:
            row("  free", vg.free_mib, "", "(no logical volumes)")
    lines.append("Hard drive")
    for part in layout.partitions:
        if part.kind == "extended":
            row(part.name, part.size_mib, "", "extended")
        elif part.vg:
            row(part.name, part.size_mib, part.vg, "PV (LVM)" + (", logical" if part.kind == "logical" else ""))
        else:
            row(part.name, part.size_mib, part.mount or "", part.fstype or "")
    return "\n".join(lines)


def run_layout(args: argparse.Namespace) -> int:
    try:
        if args.host:
            node = inventory_from_args(args).node(args.host)
            layout = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
        else:
            size = parse_size(args.disk) if args.disk else None
            layout = plan_layout(args.role, size, uefi=args.uefi)
    except (LayoutError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(format_layout(layout))
    return 0


def run_render(args: argparse.Namespace) -> int:
    inventory = inventory_from_args(args)
    for directory in args.templates:
        if not directory.is_dir():
            raise UserError(f"--templates {directory}: not a directory")
    node = inventory.node(args.host)
    if args.kind == "manifest":
        config = effective_config(args)
        templates = [*args.templates, *config.templates]
        url = f"http://{inventory.site.server}:{config.http_port}"
        print(json.dumps(ManifestService(inventory, templates).masked(node, url), indent=2))
        return 0
    renderer = Renderer(inventory, args.templates)
    if args.kind == "deploy":
        try:
            size = parse_size(args.disk_size) if args.disk_size else None
        except ValueError as exc:
            raise UserError(f"--disk-size: {exc}") from None
        print(renderer.deploy_script(node, size), end="")
        return 0
    if args.disk_size:
        raise UserError("--disk-size applies to render deploy only (kickstart and preseed take the inventory's)")
    print(renderer.render(args.kind, node), end="")
    return 0
