"""`provisiond serve`: run DHCP, TFTP and HTTP on the site network until SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

from provisiond.config import Config, effective_config


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="run the provisioning server (DHCP, TFTP, HTTP) until SIGTERM",
        description="DHCP on IFACE, TFTP and HTTP on IFACE's address on its network of the "
        "inventory; relayed networks are answered through their relay. Options override "
        "provisiond.toml [serve].",
    )
    parser.add_argument("--interface", action="append", metavar="IFACE",
                        help="interface on a network of the inventory, by name or by its "
                        "address (repeat for several)")
    parser.add_argument("--proxy", action="store_true", default=None,
                        help="proxyDHCP beside the site's DHCP server: add only the PXE boot offer "
                        "(serve.dhcp_proxy)")
    parser.add_argument("--tftp-root", type=Path, metavar="DIR", help="TFTP root directory")
    parser.add_argument("--http-port", type=int, metavar="N", help="HTTP port (default 8080)")
    parser.add_argument("--tftp-port", type=int, metavar="N", help="TFTP port (default 69)")
    parser.set_defaults(func=run_serve, verbosity_base=1)


def serve_config(args: argparse.Namespace) -> Config:
    """provisiond.toml with the command line's options on top."""
    return effective_config(args).with_overrides(
        interfaces=tuple(args.interface) if args.interface else None,
        tftp_root=args.tftp_root, http_port=args.http_port, tftp_port=args.tftp_port,
        dhcp_proxy=args.proxy,
    )


def run_serve(args: argparse.Namespace) -> int:
    from provisiond.serve import Server

    return Server(serve_config(args), verbosity=args.verbosity).run()
