"""`provisiond lab [up|down]`: the virtual lab on this machine (docs/lab.md).

    provisiond lab [--computes N] [--firmware [HOST=]bios|uefi]... [--install image|preseed]
                   [--openstack] [--until STATE] [--timeout SECONDS] [--down-after]
    provisiond lab down [--pid PID | --workdir DIR | --all]
    provisiond lab [--workdir DIR | --pid PID] ssh HOST [-- COMMAND...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from provisiond.errors import UserError
from provisiond.lab.plan import INSTALL_METHODS, lab_nodes
from provisiond.lab.ports import free_udp_ports
from provisiond.lifecycle import State

if TYPE_CHECKING:
    from provisiond.lab.orchestrator import Lab

UNTIL = ("pxe", "installing", "installed", "ready")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "lab", help="the virtual PXE lab: QEMU nodes behind virtual BMCs, installed by provisiond",
        description="Build a lab network (a namespace with a bridge, no uplink), one QEMU VM and "
        "virtual BMC per node, run `provisiond serve` on the bridge and `provisiond provision "
        "--all` over IPMI, show every node until it is ready or failed, then a report. The lab "
        "stays up until Ctrl-C or `provisiond lab down`, which remove everything it made.",
    )
    parser.add_argument("action", nargs="?", choices=("up", "down", "snapshot", "restore", "ssh"),
                        default="up",
                        help="up (default); down (stop this lab: the one of --pid, --workdir or "
                        "the global --state-dir, or the only one running; --all: every lab); "
                        "snapshot / restore every node's disk and NVRAM and provisiond's store "
                        "of the running lab; ssh HOST [-- COMMAND...]: root on a node of the "
                        "running lab, with the lab's own key, from inside the lab network (options "
                        "such as --workdir go before ssh)")
    parser.add_argument("words", nargs="*", metavar="HOST [COMMAND]", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="installed",
                        help="snapshot name for snapshot/restore (default installed)")
    parser.add_argument("--pid", type=int,
                        help="the lab to act on (down, snapshot, restore; or name it by "
                        "--workdir or the global --state-dir)")
    parser.add_argument("--all", action="store_true",
                        help="down: stop every running lab on this machine")
    parser.add_argument("--computes", type=int, default=2, metavar="N",
                        help="compute nodes besides the controller (default 2)")
    parser.add_argument("--firmware", action="append", default=[], metavar="[HOST=]bios|uefi",
                        help="firmware of every node, or of one (repeatable); the default lab "
                        "mixes BIOS and UEFI")
    parser.add_argument("--install", choices=tuple(INSTALL_METHODS), default="image",
                        help="image (default: the root image, fast) or preseed (the Debian installer)")
    parser.add_argument("--openstack", action="store_true",
                        help="finish the nodes as an OpenStack cluster (site.openstack: TCG computes, "
                        "one worker per API, the cluster check); root images carry the role's "
                        "OpenStack packages; more memory; BIOS nodes unless --firmware says otherwise")
    parser.add_argument("--until", choices=UNTIL, default="ready",
                        help="the state every node must reach (default ready)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="bound on the whole run after power-on (default 7200, with --openstack "
                        "14400: TCG on shared cores)")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="where disks, logs and state go (default /var/tmp/provisiond-lab/PID); "
                        "down/snapshot/restore: the lab running there")
    parser.add_argument("--down-after", action="store_true",
                        help="remove the lab after the report instead of keeping it up")
    parser.set_defaults(func=run_lab)


def _report_table(rows: list[dict]) -> Table:
    table = Table(title="lab report", title_justify="left")
    for column in ("node", "role", "firmware", "state", "phases (s)", "facts / reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        phases = ", ".join(f"{name} {seconds:.0f}" for name, seconds in row["phases"].items())
        if row["deploy"]:
            phases += " (deploy: " + ", ".join(f"{name} {seconds:.0f}"
                                                for name, seconds in row["deploy"].items()) + ")"
        facts = row["reason"] or "; ".join(f"{kind}: {detail}" for kind, detail in row["facts"].items())
        colour = "green" if row["state"] == "ready" else "red" if row["state"] == "failed" else "yellow"
        table.add_row(row["node"], row["role"], row["firmware"], f"[{colour}]{row['state']}[/]",
                      escape(phases or "-"), escape(facts or "-"))
    return table


def _snapshot_or_restore(args: argparse.Namespace, record: dict) -> int:
    from provisiond.lab.snapshot import restore_lab, snapshot_lab

    workdir = Path(record["workdir"])
    hosts = list(record["nodes"])
    globals_ = ["--inventory", str(workdir / "inventory.yaml"), "--state-dir", str(workdir / "state"),
                "--config", str(workdir / "provisiond.toml")]
    if args.action == "snapshot":
        done = snapshot_lab(workdir, hosts, args.name)
        for host, how in done.items():
            print(f"{host}: disk and NVRAM saved as {args.name!r} ({how})")
        print(f"provisiond's store saved; restore with `provisiond lab restore --name {args.name}`")
        return 0
    restore_lab(workdir, hosts, args.name)
    print(f"{len(hosts)} node(s) and provisiond's store are back at {args.name!r}; nodes are off")
    power = subprocess.run([sys.executable, "-m", "provisiond", *globals_, "power", "--all", "on"],
                           capture_output=True, text=True, timeout=300, check=False)
    print(power.stdout, end="")
    print(f"follow them: provisiond {' '.join(globals_)} watch")
    return power.returncode


def _ssh(args: argparse.Namespace, record: dict) -> int:
    """Replace this process with ssh to the node, inside the lab's network namespace."""
    from provisiond.inventory import load_inventory
    from provisiond.lab.plan import ssh_argv

    workdir = Path(record["workdir"])
    if not args.words:
        raise UserError("lab ssh: name the node: provisiond lab ssh HOST [-- COMMAND...]")
    host, command = args.words[0], args.words[1:]
    nodes = {node.hostname: node for node in load_inventory(workdir / "inventory.yaml").nodes}
    if host not in nodes:
        raise UserError(f"lab ssh: the lab in {workdir} has no node {host!r} (it has: {', '.join(nodes)})")
    key = workdir / "ssh_key"
    if not key.exists():
        raise UserError(f"lab ssh: the lab in {workdir} has no SSH key (it was made by an older provisiond); "
                        "its nodes take no key: start a new lab")
    argv = ["ip", "netns", "exec", record["netns"], *ssh_argv(str(key), str(nodes[host].ip), command)]
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127  # not reached: exec replaced this process or raised


def _print_report(lab: Lab, workdir: Path) -> None:
    rows = lab.report()
    console = Console() if Console().is_terminal else Console(width=200)
    console.print(_report_table(rows))
    print(f"report: {workdir / 'report.json'}", flush=True)


def run_lab(args: argparse.Namespace) -> int:
    from provisiond.lab.orchestrator import (
        RUN_ROOT,
        Lab,
        LabInterrupted,
        find_lab,
        lab_down,
    )

    target = {"pid": args.pid, "workdir": args.workdir, "state_dir": args.state_dir}
    if args.action == "down":
        stopped = lab_down(**target, every=args.all)
        print(f"provisiond lab down: {stopped} lab(s) stopped; nothing of them is left")
        return 0
    if args.action in ("snapshot", "restore"):
        return _snapshot_or_restore(args, find_lab(**target))
    if args.action == "ssh":
        return _ssh(args, find_lab(**target))
    if args.words:
        raise UserError(f"lab {args.action}: unexpected {' '.join(args.words)!r} (only `lab ssh HOST` takes more)")
    nodes = lab_nodes(args.computes, args.firmware,
                      bmc_base_port=free_udp_ports(args.computes + 1), openstack=args.openstack)
    workdir = args.workdir or RUN_ROOT / str(os.getpid())
    lab = Lab(nodes, args.install, workdir, out=lambda line: print(line, flush=True),
              openstack=args.openstack)
    timeout = args.timeout or (14400 if args.openstack else 7200)
    stop = threading.Event()
    owner = os.getpid()

    def interrupted(signum: int, _frame: object) -> None:
        if os.getpid() != owner:  # a forked helper (pyroute2's netns worker): not the lab
            os._exit(128 + signum)
        stop.set()
        raise LabInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        lab.up()
        lab.provision()
        ok = lab.watch(until=State(args.until), timeout=timeout)
        _print_report(lab, workdir)
        if not args.down_after:
            print("the lab stays up: Ctrl-C here, or `provisiond lab down`, removes it; "
                  f"`provisiond lab --workdir {workdir} ssh HOST` logs in to a node", flush=True)
            while not stop.wait(3600):
                pass
        return 0 if ok else 1
    except LabInterrupted as exc:
        print(f"provisiond lab: {exc} received, removing the lab", flush=True)
        if lab.provisioned_at is not None and not lab.reported:
            _print_report(lab, workdir)  # how far each node got, and how long each phase took
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        lab.down()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("provisiond lab: removed (network, BMCs, VMs, serve)", flush=True)
