"""Gather the facts and build doctor's report: the thin runner around doctor.checks.

Every check is bounded: the DHCP probe by `probe_seconds`, the BMCs by the power fan-out's
own bound (PowerConfig), DNS by the site's dns_update.timeout. A check that cannot run says
why (warn) instead of stopping the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from provisiond.config import Config
from provisiond.doctor import assets, probe
from provisiond.doctor.checks import (
    PortHolder,
    Report,
    Result,
    Status,
    interface_result,
    listening_inodes,
    port_result,
    power_results,
    relay_results,
    rogue_dhcp_result,
)
from provisiond.endpoint import find_interface, resolve_endpoint
from provisiond.errors import UserError
from provisiond.images.cache import ImageCache
from provisiond.inventory import Inventory, InventoryError, load_inventory
from provisiond.power import PowerConfig, run_action
from provisiond.power.targets import bmc_targets
from provisiond.render import Renderer

CHECKS = ("inventory", "interface", "relay", "port", "rogue-dhcp", "assets", "answers", "bmc", "dns")
IFF_UP = 0x1


@dataclass(frozen=True)
class DoctorOptions:
    probe_seconds: float = 4.0
    power: PowerConfig = field(default_factory=lambda: PowerConfig(timeout=5.0, retries=0))
    skip: frozenset[str] = frozenset()


def run_doctor(config: Config, options: DoctorOptions | None = None) -> Report:
    """Every check, in the order an operator fixes things."""
    options = options or DoctorOptions()
    results: list[Result] = []
    inventory = _inventory(config, results)
    if "port" not in options.skip:
        results += _ports(config)
    if inventory is None:
        return Report(tuple(results))
    if not config.interfaces and {"interface", "rogue-dhcp"} - options.skip:
        results.append(Result("interface", Status.WARN, "no interface given: interface and rogue-DHCP checks skipped",
                              "pass --interface IFACE (serve.interfaces in provisiond.toml)"))
    for name in config.interfaces:
        if "interface" not in options.skip:
            results.append(_interface(name, inventory))
        if "rogue-dhcp" not in options.skip:
            results.append(_rogue_dhcp(name, inventory, config, options.probe_seconds))
    if config.interfaces and "relay" not in options.skip:
        results += _relays(config, inventory)
    if "assets" not in options.skip:
        results += _assets(inventory, config)
    if "answers" not in options.skip:
        results += _answers(inventory, config)
    if "bmc" not in options.skip:
        targets, failures = bmc_targets(inventory.nodes, "status")
        results += power_results(failures + run_action(targets, "status", options.power))
    if "dns" not in options.skip:
        results += _dns(inventory)
    return Report(tuple(results))


def _inventory(config: Config, results: list[Result]) -> Inventory | None:
    try:
        inventory = load_inventory(config.inventory)
    except InventoryError as exc:
        for problem in exc.problems:
            results.append(Result("inventory", Status.FAIL, problem.format(exc.path),
                                  "fix the inventory (docs/inventory.md)", str(exc.path)))
        return None
    except UserError as exc:
        results.append(Result("inventory", Status.FAIL, str(exc), subject=str(config.inventory)))
        return None
    results.append(Result("inventory", Status.OK, f"{inventory.path}: {len(inventory.nodes)} nodes, valid",
                          subject=str(inventory.path)))
    results += [Result("inventory", Status.WARN, warning, subject=str(inventory.path))
                for warning in inventory.warnings]
    return inventory


def _interface(name: str, inventory: Inventory) -> Result:
    networks = [(network.network, network.server) for network in inventory.site.all_networks]
    try:
        real_name, addresses = find_interface(name)
    except UserError:
        return interface_result(name, False, False, [], networks)
    from pyroute2 import IPRoute  # netlink: ~0.3 s to import, only on the paths that query links

    with IPRoute() as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=real_name)[0])[0]
    return interface_result(real_name, True, bool(link["flags"] & IFF_UP), addresses, networks)


def _relays(config: Config, inventory: Inventory) -> list[Result]:
    """The relayed networks against the addresses serve would answer on (as serve picks them)."""
    served = []
    for spec in config.interfaces:
        try:
            served.append(resolve_endpoint(spec, inventory.site, config.http_port).address)
        except UserError:
            continue  # the interface check says what is wrong with it
    return relay_results(inventory.site.all_networks, served)


def _rogue_dhcp(name: str, inventory: Inventory, config: Config, seconds: float) -> Result:
    try:
        real_name, addresses = find_interface(name)
        offers = probe.probe(real_name, seconds)
    except (UserError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Result("rogue-dhcp", Status.WARN, f"could not probe {name}: {reason}",
                      "run doctor as root with a valid --interface", name)
    ours = {*(network.server for network in inventory.site.all_networks), *(a.ip for a in addresses)}
    return rogue_dhcp_result(real_name, offers, ours, seconds, config.dhcp_proxy)


def _socket_owners() -> dict[int, PortHolder]:
    """Socket inode -> the process holding it (from /proc; processes we cannot read are skipped)."""
    owners: dict[int, PortHolder] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (pid_dir / "fd").iterdir()]
            program = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:["):
                owners[int(link[8:-1])] = PortHolder(int(pid_dir.name), program[:120])
    return owners


def _ports(config: Config) -> list[Result]:
    wanted = [("udp", 67, "DHCP"), ("udp", config.tftp_port, "TFTP"), ("udp", 4011, "proxyDHCP/PXE"),
              ("tcp", config.http_port, "HTTP")]
    tables = {proto: "".join(Path(f"/proc/net/{proto}{v}").read_text() if Path(f"/proc/net/{proto}{v}").exists()
                             else "" for v in ("", "6")) for proto in ("udp", "tcp")}
    owners = _socket_owners()
    results = []
    for proto, port, what in wanted:
        inodes = listening_inodes(tables[proto], port, udp=proto == "udp")
        holders = [owners.get(inode, PortHolder(None, "a process this user cannot see")) for inode in inodes]
        results.append(port_result(proto, port, what, holders))
    return results


def _assets(inventory: Inventory, config: Config) -> list[Result]:
    results = []
    for need in assets.needed_assets(inventory, config):
        nodes = ", ".join(need.nodes[:5]) + (f" and {len(need.nodes) - 5} more" if len(need.nodes) > 5 else "")
        if need.path.is_file():
            results.append(Result("assets", Status.OK, f"{need.what}: {need.path}", subject=str(need.path)))
        else:
            results.append(Result("assets", Status.FAIL, f"{need.what} missing: {need.path} (needed by {nodes})",
                                  need.provider, str(need.path)))
    cache = ImageCache(config.image_cache)
    for recipe, hosts in assets.needed_images(inventory).items():
        name, needed_by = recipe.name, ", ".join(hosts)
        if cache.served(recipe) is not None:
            results.append(Result("assets", Status.OK, f"image {name} built", subject=name))
        elif cache.lookup(name) is not None:  # another provisiond's build: not served here
            results.append(Result("assets", Status.FAIL, f"image {name} is built only by other code "
                                  f"(another version or checkout; this one does not serve it; needed by {needed_by})",
                                  "run `provisiond image build`", name))
        else:
            results.append(Result("assets", Status.FAIL, f"image {name} is not built (needed by {needed_by})",
                                  "run `provisiond image build`", name))
    return results


def _answers(inventory: Inventory, config: Config) -> list[Result]:
    """Every installer node's answer file renders; kickstarts also pass pykickstart's parser."""
    renderer = Renderer(inventory, list(config.templates) or None)
    results = []
    for node in inventory.nodes:
        if node.install_method != "installer":
            continue
        try:
            kind, text = renderer.install_config(node)
        except UserError as exc:
            results.append(Result("answers", Status.FAIL, str(exc), "fix the template or the node", node.hostname))
            continue
        problem = kickstart_problem(text) if kind == "kickstart" else None
        if problem:
            results.append(Result("answers", Status.FAIL, f"kickstart: {problem}", "fix the template", node.hostname))
        else:
            results.append(Result("answers", Status.OK, f"{kind} renders" + (", pykickstart accepts it"
                                                                            if kind == "kickstart" else ""),
                                  subject=node.hostname))
    return results


def kickstart_problem(text: str) -> str | None:
    """What pykickstart's RHEL 9 parser refuses in a kickstart (None: accepted)."""
    from pykickstart.errors import KickstartError
    from pykickstart.parser import KickstartParser
    from pykickstart.version import RHEL9, makeVersion

    try:
        KickstartParser(makeVersion(RHEL9)).readKickstartFromString(text)
    except KickstartError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _dns(inventory: Inventory) -> list[Result]:
    from provisiond.dns.client import DnsError
    from provisiond.dns.publish import client_for, site_zones

    if inventory.site.dns_update is None:
        return [Result("dns", Status.OK, "no site.dns_update: names are not published (docs/dns.md)")]
    zones = site_zones(inventory.site)
    try:
        client = client_for(zones)
    except UserError as exc:
        return [Result("dns", Status.FAIL, str(exc), "fix site.dns_update.key_file", "key_file")]
    results = []
    for zone in zones.zones:
        try:
            client.check(zone)
        except DnsError as exc:
            results.append(Result("dns", Status.FAIL, str(exc), "see docs/dns.md for the server's set-up", zone))
        else:
            results.append(Result("dns", Status.OK, f"{client.where} answers for {zone}, key {client.key_name!r} "
                                  "accepted", subject=zone))
    return results

