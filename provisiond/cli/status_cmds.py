"""`status`, `watch`, `events HOST`, `netboot HOST on|off`, `discovered`, `transfers`: the
operator's view of a server.

Each acts on the store in --state-dir (beside a running `provisiond serve`) or, with
`--server URL`, on a server's API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from provisiond.client import Backend, HttpBackend, LocalBackend, operator_token_for
from provisiond.config import effective_config
from provisiond.errors import UserError
from provisiond.lifecycle import State

STEPS = [State.NEW, State.POWERING_ON, State.PXE, State.INSTALLING, State.INSTALLED,
         State.CONFIGURING, State.READY]


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="act on this server's API instead of "
                        "the store in --state-dir (e.g. http://10.213.0.1:8080)")
    parser.add_argument("--token", metavar="TOKEN", help="operator token for --server "
                        "(default: $PROVISIOND_OPERATOR_TOKEN or <state-dir>/operator.token)")


def register(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="table of nodes: state, age, agent step, last event")
    _target(status)
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(func=run_status)

    watch = commands.add_parser("watch", help="live progress until the nodes are ready or failed")
    _target(watch)
    watch.add_argument("hosts", nargs="*", metavar="HOST", help="nodes to watch (default: all)")
    watch.add_argument("--role", help="watch the nodes of this role")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    watch.add_argument("--timeout", type=float, default=None,
                       help="give up after this many seconds (exit 2)")
    watch.set_defaults(func=run_watch)

    events = commands.add_parser("events", help="a node's events, oldest first")
    _target(events)
    events.add_argument("host", metavar="HOST")
    events.add_argument("--since", type=int, default=0, help="only events after this id")
    events.add_argument("--json", action="store_true", help="print JSON")
    events.set_defaults(func=run_events)

    discovered = commands.add_parser(
        "discovered", help="MACs that asked DHCP but are not in the inventory (discovery list)")
    _target(discovered)
    form = discovered.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the API's JSON")
    form.add_argument("--yaml", action="store_true",
                      help="print inventory entries to start from (fill in role, ip, disk, bmc)")
    discovered.set_defaults(func=run_discovered)

    transfers = commands.add_parser("transfers", help="TFTP transfer statistics: totals and the "
                                    "last transfers")
    _target(transfers)
    transfers.add_argument("--limit", type=int, default=20, metavar="N",
                           help="how many recent transfers to list (1-1000, default 20)")
    transfers.add_argument("--json", action="store_true", help="print the API's JSON")
    transfers.set_defaults(func=run_transfers)

    netboot = commands.add_parser("netboot", help="turn a node's network boot on or off")
    _target(netboot)
    netboot.add_argument("host", metavar="HOST")
    netboot.add_argument("setting", choices=("on", "off"))
    netboot.set_defaults(func=run_netboot)


def backend(args: argparse.Namespace) -> Backend:
    config = effective_config(args)
    if args.server:
        return HttpBackend(args.server, operator_token_for(config, args.token))
    return LocalBackend(config, inventory_given=args.inventory is not None)


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _last(node: dict[str, Any]) -> str:
    event = node.get("last_event")
    if not event:
        return ""
    return f"{event['kind']} ({event['source']}, {_age(time.time() - event['ts'])} ago)"


def agent_step(node: dict[str, Any]) -> str:
    """The agent's current step, "n of m", and what a barrier waits for ("" before the agent)."""
    agent = node.get("agent") or {}
    if not agent.get("step"):
        return ""
    text = f"{agent['index']}/{agent['count']} {agent['step']} ({agent['status']})"
    waiting = agent.get("waiting")
    if waiting and waiting.get("missing"):
        text += f", waiting for {waiting['fact']} from {', '.join(waiting['missing'])}"
    return text


def run_status(args: argparse.Namespace) -> int:
    nodes = backend(args).nodes()
    if args.json:
        print(json.dumps({"nodes": nodes}, indent=2))
        return 0
    table = Table(title=f"{len(nodes)} node(s)")
    for column in ("HOST", "STATE", "AGE", "NETBOOT", "STEP", "LAST EVENT", "REASON"):
        table.add_column(column)
    for node in nodes:
        table.add_row(node["hostname"], node["state"], _age(node["age_seconds"]),
                      "on" if node["netboot"] else "off", agent_step(node), _last(node), node["reason"] or "")
    Console(width=max(120, Console().width)).print(table)
    return 0


def _selected(args: argparse.Namespace, nodes: list[dict[str, Any]]) -> list[str]:
    by_name = {node["hostname"]: node for node in nodes}
    unknown = [host for host in args.hosts if host.lower() not in by_name]
    if unknown:
        raise UserError(f"not nodes of this server: {', '.join(unknown)} "
                        f"(known: {', '.join(by_name) or 'none'})")
    picked = [host.lower() for host in args.hosts]
    if args.role:
        picked += [n["hostname"] for n in nodes if n["role"] == args.role and n["hostname"] not in picked]
        if not picked:
            raise UserError(f"no node has role {args.role}")
    return picked or list(by_name)


def run_watch(args: argparse.Namespace) -> int:
    """Poll until every selected node is ready or failed; exit 1 naming failures, 2 on timeout."""
    source = backend(args)
    hosts = _selected(args, source.nodes())
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    console = Console(stderr=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        total = progress.add_task(f"{len(hosts)} node(s)", total=len(hosts) * (len(STEPS) - 1),
                                  state="")
        tasks = {host: progress.add_task(f"  {host}", total=len(STEPS) - 1, state="") for host in hosts}
        while True:
            current = {node["hostname"]: node for node in source.nodes()}
            done = 0
            for host, task in tasks.items():
                node = current.get(host)
                state = State(node["state"]) if node else State.FAILED
                step = len(STEPS) - 1 if state is State.FAILED else STEPS.index(state)
                label = f"failed: {node['reason']}" if node and state is State.FAILED else state.value
                if node and state is State.CONFIGURING and agent_step(node):
                    label += f": {agent_step(node)}"
                progress.update(task, completed=step, state=label)
                done += step
            progress.update(total, completed=done)
            finished = [h for h in hosts if current.get(h, {}).get("state") in ("ready", "failed", None)]
            if len(finished) == len(hosts):
                break
            if deadline is not None and time.monotonic() >= deadline:
                waiting = [h for h in hosts if h not in finished]
                print(f"provisiond watch: timed out; not finished: {', '.join(waiting)}", file=sys.stderr)
                return 2
            time.sleep(args.interval)
    failed = [(h, current[h]["reason"] if h in current else "removed from the server")
              for h in hosts if current.get(h, {}).get("state", "failed") == "failed"]
    if failed:
        for host, reason in failed:
            print(f"provisiond watch: {host} failed: {reason}", file=sys.stderr)
        return 1
    print(f"provisiond watch: all {len(hosts)} node(s) ready")
    return 0


def run_events(args: argparse.Namespace) -> int:
    events = backend(args).events(since=args.since, host=args.host)
    if args.json:
        print(json.dumps({"events": events}, indent=2))
        return 0
    table = Table(title=f"events of {args.host}")
    for column in ("ID", "TIME (UTC)", "EVENT", "SOURCE", "DETAIL"):
        table.add_column(column)
    for event in events:
        detail = " ".join(f"{k}={v}" for k, v in sorted(event["detail"].items()))
        table.add_row(str(event["id"]), _when(event["ts"]), event["kind"], event["source"], detail)
    Console(width=max(120, Console().width)).print(table)
    return 0


def run_netboot(args: argparse.Namespace) -> int:
    result = backend(args).set_netboot(args.host, args.setting == "on")
    print(f"{result['hostname']}: netboot {'on' if result['netboot'] else 'off'} "
          f"(state {result['state']})")
    return 0


def _seen_text(detail: dict[str, Any]) -> str:
    return " ".join(f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                    for key, value in sorted(detail.items()))


def run_discovered(args: argparse.Namespace) -> int:
    seen = backend(args).discovered()
    if args.json:
        print(json.dumps({"discovered": seen}, indent=2))
        return 0
    if args.yaml:
        print("# Discovered by provisiond: fill in role, ip, disk and bmc, then add under nodes:")
        for item in seen:
            name = str(item["detail"].get("hostname") or f"node-{item['mac'].replace(':', '')[-6:]}")
            print(f"  - hostname: {name.lower()}   # {_seen_text(item['detail'])}, "
                  f"last seen {_when(item['last_seen'])} UTC")
            print(f"    mac: {item['mac']}")
            print("    role: compute\n    ip: \"\"\n    disk: {device: sda, size: \"\"}")
        return 0
    table = Table(title=f"{len(seen)} MAC(s) not in the inventory")
    for column in ("MAC", "FIRST SEEN (UTC)", "LAST SEEN (UTC)", "REQUESTS", "WHAT IT SAID"):
        table.add_column(column)
    for item in seen:
        table.add_row(item["mac"], _when(item["first_seen"]), _when(item["last_seen"]),
                      str(item["count"]), _seen_text(item["detail"]))
    Console(width=max(120, Console().width)).print(table)
    return 0


def run_transfers(args: argparse.Namespace) -> int:
    if not 0 < args.limit <= 1000:
        raise UserError(f"--limit {args.limit}: give a number from 1 to 1000")
    stats = backend(args).transfers(args.limit)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    console = Console(width=max(120, Console().width))
    totals = Table(title="TFTP transfers since the store was created")
    for column in ("OUTCOME", "TRANSFERS", "BYTES", "RETRANSMITS"):
        totals.add_column(column)
    for outcome, row in stats["totals"].items():
        totals.add_row(outcome, str(row["transfers"]), str(row["bytes"]), str(row["retransmits"]))
    console.print(totals)
    recent = Table(title=f"last {len(stats['transfers'])} transfer(s)")
    for column in ("TIME (UTC)", "PEER", "FILE", "BYTES", "SECONDS", "RETRANSMITS", "OPTIONS",
                   "OUTCOME"):
        recent.add_column(column)
    for item in stats["transfers"]:
        options = " ".join(f"{k}={v}" for k, v in sorted(item["options"].items()))
        recent.add_row(_when(item["ts"]), item["peer"], item["filename"], str(item["bytes"]),
                       f"{item['duration']:.3f}", str(item["retransmits"]), options, item["outcome"])
    console.print(recent)
    return 0
