"""`provisiond dhcp --interface IFACE`: the DHCP server alone, in the foreground.

`provisiond serve` runs the same DhcpServer beside TFTP and HTTP; this command exists so the
DHCP part can be tried (and benchmarked) by itself. It stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from provisiond import nodes
from provisiond.cli.inventory_cmds import inventory_from_args
from provisiond.config import effective_config
from provisiond.dhcp.server import DhcpServer, Pool
from provisiond.errors import UserError

log = logging.getLogger(__name__)


def _pool(text: str) -> Pool:
    try:
        return Pool.parse(text)
    except UserError as exc:  # argparse reports ArgumentTypeError as a usage error, exit 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dhcp", help="run only the DHCP server (reservations, PXE boot files, proxyDHCP)",
    )
    parser.add_argument("--interface", required=True, metavar="IFACE",
                        help="the interface on the site network, or its address "
                        "(never a shared uplink)")
    parser.add_argument("--proxy", action="store_true",
                        help="proxyDHCP: another server gives addresses; add only the PXE offer")
    parser.add_argument("--http-port", type=int, default=8080, metavar="PORT",
                        help="port of provisiond's HTTP service in boot URLs (default 8080)")
    parser.add_argument("--pool", type=_pool, default=None, metavar="FIRST-LAST",
                        help="dynamic range for MACs not in the inventory (default: no answer)")
    parser.add_argument("--lease-time", type=int, default=3600, metavar="SECONDS",
                        help="lease time in seconds (default 3600)")
    parser.set_defaults(func=run_dhcp)


def run_dhcp(args: argparse.Namespace) -> int:
    if args.lease_time < 60:
        raise UserError(f"--lease-time {args.lease_time} is too short: give at least 60 seconds")
    inventory = inventory_from_args(args)
    store = nodes.open_store(effective_config(args).state_dir, inventory)
    server = DhcpServer(
        inventory, store, args.interface, http_port=args.http_port, proxy=args.proxy,
        pool=args.pool, lease_time=args.lease_time,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    print(f"provisiond: DHCP{' proxy' if args.proxy else ''} on {args.interface} "
          f"for {len(inventory.nodes)} nodes; Ctrl-C stops", flush=True)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        server.stop()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(server.stats.items())) or "no packets"
        print(f"provisiond: DHCP stopped ({counts})", flush=True)
    return 0
