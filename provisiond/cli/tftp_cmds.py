"""`provisiond tftp`: serve a directory over TFTP on its own (no store, no generated files).

Handy to try the TFTP server alone or to benchmark it; `provisiond serve` runs the same server
with the per-node generated boot configs.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from provisiond.tftp import TftpServer


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("tftp", help="serve a directory over TFTP (read-only)")
    parser.add_argument("--root", type=Path, required=True, metavar="DIR",
                        help="directory to serve; nothing outside it is ever sent")
    parser.add_argument("--address", default="0.0.0.0", help="IPv4 address to listen on")
    parser.add_argument("--port", type=int, default=69, help="UDP port (default 69)")
    parser.add_argument("--max-transfers", type=int, default=1024, metavar="N",
                        help="concurrent transfers; further requests wait in line (docs/tftp.md)")
    parser.add_argument("--engine", choices=("native", "python"), default="native",
                        help="where transfers run: the native sender (default) or the Python "
                             "loop (its fallback; for comparison)")
    parser.set_defaults(func=run_tftp)


def run_tftp(args: argparse.Namespace) -> int:
    server = TftpServer(args.root, args.address, args.port, max_transfers=args.max_transfers,
                        native_sender=args.engine == "native")
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    server.start()
    engine = "native sender" if server.native else "Python loop"
    print(f"provisiond tftp: serving {args.root} on {args.address}:{server.port} "
          f"(transfers: {engine})", flush=True)
    try:
        done.wait()
    finally:
        server.stop()
    return 0
