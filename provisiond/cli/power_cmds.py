"""`power`, `provision` and `vbmc`: power control over IPMI, (re)install, a virtual BMC.

    provisiond power HOST...|--role ROLE|--all status|on|off|soft|cycle|reset
    provisiond provision HOST...|--role ROLE|--all
    provisiond vbmc --port 16230 --username admin --password-file FILE

Exit status 0 only if every selected node succeeded. Passwords come from the inventory's
password_file / password_env, never from the command line, and are never printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from provisiond import nodes as nodes_service
from provisiond.config import effective_config
from provisiond.errors import UserError
from provisiond.inventory import ROLES, Inventory, Node, load_inventory
from provisiond.lab.vbmc_args import add_arguments as add_vbmc_arguments
from provisiond.lifecycle import Source
from provisiond.power import ACTIONS, BmcTarget, NodeResult, PowerConfig
from provisiond.power.targets import bmc_targets
from provisiond.power.waves import MAX_INTERVAL, WAVE_ACTIONS, PowerWaves, run_in_waves, split
from provisiond.store import Store

POWER_ACTIONS = tuple(a for a in ACTIONS if a != "pxe-boot")


def register(commands: argparse._SubParsersAction) -> None:
    power = commands.add_parser(
        "power", help="power status/on/off/soft/cycle/reset of nodes over IPMI",
        description="Power control through each node's BMC (IPMI). Exit 0 only if every node "
        "succeeded.",
    )
    power.add_argument("hosts", nargs="*", metavar="HOST", help="nodes of the inventory")
    power.add_argument("action", choices=POWER_ACTIONS, help="what to do")
    _selection_and_limits(power)
    power.set_defaults(func=run_power)

    provision = commands.add_parser(
        "provision", help="(re)install nodes: netboot on, new token, one-time PXE, power on",
        description="Mark nodes for installation (netboot on, a new token, state powering-on), "
        "set a one-time PXE boot (UEFI or BIOS from the inventory) and power them on, or power "
        "cycle them if they are on. Exit 0 only if every node succeeded.",
    )
    provision.add_argument("hosts", nargs="*", metavar="HOST", help="nodes of the inventory")
    _selection_and_limits(provision)
    provision.set_defaults(func=run_provision)

    bmc = commands.add_parser(
        "vbmc", help="run virtual BMC(s) with in-memory machines (try power/provision anywhere)",
        description="Serve IPMI 2.0 (RMCP+) on UDP like a real BMC, backed by an in-memory "
        "machine, and print its power state changes. Stop with Ctrl-C.",
    )
    add_vbmc_arguments(bmc)
    bmc.set_defaults(func=run_vbmc)


def run_vbmc(args: argparse.Namespace) -> int:
    from provisiond.lab import vbmc  # pyghmi, only to serve

    return vbmc.run(args)


def _selection_and_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=ROLES, help="every node of this role")
    parser.add_argument("--all", action="store_true", dest="all_nodes", help="every node")
    defaults = PowerConfig()
    parser.add_argument(
        "--timeout", type=float, default=defaults.timeout, metavar="SECONDS",
        help=f"bound on each IPMI call, login included (default {defaults.timeout:g})",
    )
    parser.add_argument(
        "--retries", type=int, default=defaults.retries,
        help=f"retries after 'BMC busy' (default {defaults.retries})",
    )
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency,
        help=f"IPMI sessions at once, in total (default {defaults.concurrency})",
    )
    parser.add_argument(
        "--wave-size", type=int, metavar="N",
        help="power nodes on N at a time (on, cycle, reset, provision); 0: all at once "
        "(default: the inventory's site.power_waves, else all at once)",
    )
    parser.add_argument(
        "--wave-interval", type=float, metavar="SECONDS",
        help="seconds from one wave's start to the next's (default: site.power_waves, else 0)",
    )


def _config(args: argparse.Namespace) -> PowerConfig:
    try:
        return PowerConfig(timeout=args.timeout, retries=args.retries, concurrency=args.concurrency)
    except ValueError as exc:
        raise UserError(f"bad power option: {exc}") from None


def _waves(args: argparse.Namespace, inventory: Inventory) -> PowerWaves | None:
    """The command line's waves, else the inventory's (site.power_waves), else none."""
    site = inventory.site.power_waves
    size = args.wave_size if args.wave_size is not None else (site.size if site else 0)
    default_interval = site.interval if site else 0.0
    interval = args.wave_interval if args.wave_interval is not None else default_interval
    if size < 0 or not 0 <= interval <= MAX_INTERVAL:
        raise UserError(f"bad wave option: --wave-size {size} must be >= 0 (0: every node at "
                        f"once) and --wave-interval {interval:g} from 0 to {MAX_INTERVAL:g} seconds")
    return PowerWaves(size=size, interval=interval) if size else None


def _open_store(args: argparse.Namespace, inventory: Inventory) -> Store:
    return nodes_service.open_store(effective_config(args).state_dir, inventory)


def _select(args: argparse.Namespace) -> tuple[Inventory, list[Node]]:
    if args.role is None and not args.all_nodes and not args.hosts:
        raise UserError("no nodes selected: name hosts, or use --role ROLE or --all")
    inventory = load_inventory(effective_config(args).inventory)
    return inventory, inventory.select(args.hosts, role=args.role, all_nodes=args.all_nodes)


def _run_with_progress(
    targets: list[BmcTarget], action: str, config: PowerConfig, label: str,
    on_result: Callable[[NodeResult], None] | None = None, waves: PowerWaves | None = None,
    before_wave: Callable[[int, list[BmcTarget]], None] | None = None,
) -> list[NodeResult]:
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=len(targets), failed=0)
        failed = 0

        def advance(result: NodeResult) -> None:
            nonlocal failed
            failed += not result.ok
            progress.update(task, advance=1, failed=failed)
            if on_result is not None:
                on_result(result)

        count = len(split(targets, waves if action in WAVE_ACTIONS else None))

        def next_wave(index: int, wave: list[BmcTarget]) -> None:
            if count > 1:
                progress.update(task, description=f"{label} (wave {index + 1} of {count})")
            if before_wave is not None:
                before_wave(index, wave)

        return run_in_waves(targets, action, config, waves, before_wave=next_wave,
                            on_result=advance)


def _summary(results: list[NodeResult], nodes: list[Node], title: str) -> int:
    by_name = {node.hostname: node for node in nodes}
    table = Table(title=title, title_justify="left")
    for column in ("node", "BMC", "result", "power", "detail"):
        table.add_column(column, overflow="fold")
    for result in results:
        node = by_name[result.name]
        bmc = node.bmc.endpoint if node.bmc else "-"
        outcome = "[green]ok[/]" if result.ok else f"[red]{escape(str(result.error_kind))}[/]"
        detail = result.done if result.ok else result.message
        table.add_row(
            escape(result.name), escape(bmc), outcome, result.power or "-", escape(detail)
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log or a pipe: no wrapping at 80 columns
    console.print(table)
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} of {len(results)} node(s) succeeded", flush=True)
    return 0 if failed == 0 else 1


def _ordered(nodes: list[Node], *groups: list[NodeResult]) -> list[NodeResult]:
    by_name = {r.name: r for group in groups for r in group}
    return [by_name[node.hostname] for node in nodes]


def run_power(args: argparse.Namespace) -> int:
    inventory, nodes = _select(args)
    config = _config(args)
    waves = _waves(args, inventory)
    targets, failures = bmc_targets(nodes, args.action)
    store = _open_store(args, inventory) if args.action != "status" else None
    wave_of: dict[str, int] = {}

    def note_wave(index: int, wave: list[BmcTarget]) -> None:
        wave_of.update((target.name, index + 1) for target in wave)

    def record(result: NodeResult) -> None:
        if store is not None:
            store.add_event(result.name, f"power:{args.action}", Source.IPMI,
                            _event(result, wave_of.get(result.name) if waves else None))

    for failure in failures:
        record(failure)
    results = _run_with_progress(targets, args.action, config, f"power {args.action}", record,
                                 waves, note_wave)
    return _summary(_ordered(nodes, results, failures), nodes, f"power {args.action}")


def run_provision(args: argparse.Namespace) -> int:
    inventory, nodes = _select(args)
    config = _config(args)
    waves = _waves(args, inventory)
    targets, failures = bmc_targets(nodes, "pxe-boot")
    store = _open_store(args, inventory)
    wave_of: dict[str, int] = {}

    def mark(index: int, wave: list[BmcTarget]) -> None:
        # Mark for install just before the wave's power-on: the node may reach DHCP within
        # seconds, and a later wave's powering-on deadline starts only when it is powered on.
        for target in wave:
            wave_of[target.name] = index + 1
            nodes_service.provision(store, target.name)

    def record(result: NodeResult) -> None:
        store.add_event(result.name, "power:pxe-boot", Source.IPMI,
                        _event(result, wave_of.get(result.name) if waves else None))
        if not result.ok:
            nodes_service.power_failed(store, result.name,
                                       f"power: {result.error_kind}: {result.message}")

    for failure in failures:
        store.add_event(failure.name, "power:pxe-boot", Source.IPMI, _event(failure))
    results = _run_with_progress(targets, "pxe-boot", config, "provision", record, waves, mark)
    return _summary(_ordered(nodes, results, failures), nodes, "provision")


def _event(result: NodeResult, wave: int | None = None) -> dict:
    detail = {"ok": result.ok, "ipmi_calls": result.ipmi_calls, "elapsed": result.elapsed}
    if wave is not None:
        detail["wave"] = wave
    if result.ok:
        detail.update(power=result.power, done=result.done)
    else:
        detail.update(error=result.error_kind, message=result.message)
    return detail
