"""`provisiond serve`: run DHCP, TFTP and HTTP on the site network until SIGTERM;
`provisiond systemd-unit`: the unit that makes systemd run it."""

from __future__ import annotations

import argparse
from pathlib import Path

from provisiond.config import Config, effective_config
from provisiond.errors import UserError


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

    unit = commands.add_parser(
        "systemd-unit", help="print (or --install) the systemd unit that runs serve",
        description="The unit runs `provisiond --config FILE serve` with this Python, hardened "
        "(see docs/serve.md). --config names the file the unit uses (default "
        "/etc/provisiond/provisiond.toml).",
    )
    unit.add_argument("--install", action="store_true",
                      help="write it to --unit-dir and create the TFTP root; then run "
                      "`systemctl daemon-reload && systemctl enable --now provisiond`")
    unit.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"), metavar="DIR",
                      help="where --install writes provisiond.service (default /etc/systemd/system)")
    unit.set_defaults(func=run_systemd_unit)


def serve_config(args: argparse.Namespace) -> Config:
    """provisiond.toml with the command line's options on top."""
    return effective_config(args).with_overrides(
        interfaces=tuple(args.interface) if args.interface else None,
        tftp_root=args.tftp_root, http_port=args.http_port, tftp_port=args.tftp_port,
        dhcp_proxy=args.proxy,
    )


def run_serve(args: argparse.Namespace) -> int:
    config = serve_config(args)
    # The metrics directory must be known before prometheus_client is first imported (it
    # picks its multiprocess mode then): the HTTP child and this process count into it.
    from provisiond.metrics_dir import prepare_shared_dir, shared_dir

    prepare_shared_dir(shared_dir(config.state_dir))
    from provisiond.serve import Server

    return Server(config, verbosity=args.verbosity).run()


def run_systemd_unit(args: argparse.Namespace) -> int:
    from provisiond.config import load_config
    from provisiond.systemd_unit import DEFAULT_CONFIG, UNIT_NAME, render_unit

    config_path = (args.config or DEFAULT_CONFIG).resolve()
    tftp_root = load_config(config_path).tftp_root if config_path.is_file() else Config.tftp_root
    text = render_unit(config=config_path, tftp_root=Path(tftp_root).resolve())
    if not args.install:
        print(text, end="")
        return 0
    if not config_path.is_file():
        raise UserError(f"{config_path} does not exist: write it first (start from "
                        "examples/provisiond.toml, set serve.interfaces), or pass --config FILE")
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    Path(tftp_root).mkdir(parents=True, exist_ok=True)
    target = args.unit_dir / UNIT_NAME
    target.write_text(text)
    print(f"wrote {target} (config {config_path}, TFTP root {tftp_root}); now run:\n"
          "  systemctl daemon-reload && systemctl enable --now provisiond")
    return 0
