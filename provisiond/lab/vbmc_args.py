"""The `vbmc` command line's arguments, apart from the BMC itself: `provisiond vbmc` builds
its parser from here without loading pyghmi (provisiond.lab.vbmc subclasses pyghmi's classes,
so importing it loads pyghmi; the CLI imports it only to run the BMCs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=623, help="UDP port (default 623)")
    parser.add_argument(
        "--count",
        type=int,
        default=1,
        help="run this many BMCs on consecutive ports, each with its own machine (default 1)",
    )
    parser.add_argument("--username", default="admin", help="IPMI user name (default admin)")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password-file", type=Path, metavar="FILE", help="file with the password")
    secret.add_argument(
        "--password-env", metavar="VAR", help="environment variable with the password"
    )
