"""Command line: `provisiond [global options] COMMAND ...`.

Global options come before the command and mean the same for every command. Each group of
commands lives in its own module with a `register(subparsers)` function; adding a command is
adding a module to COMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from provisiond import __version__
from provisiond.errors import UserError
from provisiond.logs import setup_logging

COMMAND_MODULES = (
    "provisiond.cli.inventory_cmds",
    "provisiond.cli.dhcp_cmds",
    "provisiond.cli.dns_cmds",
    "provisiond.cli.doctor_cmds",
    "provisiond.cli.image_cmds",
    "provisiond.cli.lab_cmds",
    "provisiond.cli.power_cmds",
    "provisiond.cli.serve_cmds",
    "provisiond.cli.status_cmds",
    "provisiond.cli.tftp_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisiond",
        description="Bare-metal provisioning: IPMI power, PXE (DHCP/TFTP/HTTP), kickstart/preseed.",
    )
    parser.add_argument("--version", action="version", version=f"provisiond {__version__}")
    parser.add_argument(
        "--inventory", type=Path, default=None, metavar="FILE",
        help="inventory YAML (default: from the config file, else ./inventory.yaml)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, metavar="DIR",
        help="where the store lives (default: from the config file, else /var/lib/provisiond "
        "as root or ~/.local/state/provisiond)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help="provisiond.toml (default: ./provisiond.toml if present)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # One logging set-up for every command (key=value lines, secrets masked); a long-running
    # command such as `serve` logs at info by default (its `verbosity_base`).
    args.verbosity = args.verbose + getattr(args, "verbosity_base", 0)
    setup_logging(args.verbosity)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"provisiond: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("provisiond: interrupted", file=sys.stderr)
        return 130
