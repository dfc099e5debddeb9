"""The HTTP service's process: the app factory (from the environment) and waitress around it.

`provisiond serve` starts this module as a child process (by PID):
`python -m provisiond.http.wsgi --listen ADDR:PORT ... --threads N ...`; the environment says
which config file, inventory, state dir and base URL to use, so the child builds the same
application the parent would.

Why waitress: on a provisioning network anything that boots may talk to us before it is
trusted, and a client that sends its request slowly must not hold a worker. waitress reads
every request (headers and body, both bounded) in one non-blocking I/O loop and hands it to a
worker thread only once it is complete; responses go back through the same loop, so a slow
reader holds a buffer, not a thread (boot assets leave by sendfile(2) from that loop:
provisiond/http/sendfile.py). What one connection can hold and for how long is set by
the limits below (docs/serve.md, "What a client can hold").
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from types import FrameType

from flask import Flask

from provisiond.config import load_config
from provisiond.logs import log_event, setup_logging

ENV_CONFIG = "PROVISIOND_CONFIG"
ENV_INVENTORY = "PROVISIOND_INVENTORY"
ENV_STATE_DIR = "PROVISIOND_STATE_DIR"
ENV_BASE_URL = "PROVISIOND_BASE_URL"
ENV_VERBOSITY = "PROVISIOND_VERBOSITY"
ENV_INSTANCE = "PROVISIOND_INSTANCE"  # echoed by /api/v1/health: "this is my child"

# Per-connection bounds (the app itself refuses bodies over 64 KiB, MAX_CONTENT_LENGTH).
MAX_REQUEST_HEADER_BYTES = 32 * 1024
MAX_REQUEST_BODY_BYTES = 1024 * 1024
SPARE_FILE_DESCRIPTORS = 256  # files, the store, listeners: besides the client sockets

log = logging.getLogger("provisiond.http")


def app_from_env() -> Flask:
    from provisiond.http import create_app

    config_path = os.environ.get(ENV_CONFIG)
    config = load_config(Path(config_path) if config_path else None)
    config = config.with_overrides(
        inventory=Path(os.environ[ENV_INVENTORY]) if os.environ.get(ENV_INVENTORY) else None,
        state_dir=Path(os.environ[ENV_STATE_DIR]) if os.environ.get(ENV_STATE_DIR) else None,
    )
    return create_app(config, base_url=os.environ.get(ENV_BASE_URL) or None,
                      instance=os.environ.get(ENV_INSTANCE, ""))


def raise_file_limit(wanted: int) -> int:
    """Lift the soft open-files limit towards `wanted` (up to the hard limit): every held
    connection is a descriptor, and running out would refuse legitimate clients too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m provisiond.http.wsgi",
                                     description="provisiond's HTTP service (started by serve)")
    parser.add_argument("--listen", action="append", required=True, metavar="ADDR:PORT")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--connection-limit", type=int, default=4096)
    parser.add_argument("--idle-timeout", type=int, default=60)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from waitress import create_server

    from provisiond.http.sendfile import use_sendfile

    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(int(os.environ.get(ENV_VERBOSITY, "1")))
    files = raise_file_limit(args.connection_limit + SPARE_FILE_DESCRIPTORS)
    connection_limit = min(args.connection_limit, max(files - SPARE_FILE_DESCRIPTORS, 16))
    app = app_from_env()
    listeners: dict[int, object] = {}
    try:
        server = create_server(
            app, map=listeners, listen=" ".join(args.listen), threads=args.threads,
            connection_limit=connection_limit, channel_timeout=args.idle_timeout,
            cleanup_interval=max(1, min(10, args.idle_timeout // 2)),
            max_request_header_size=MAX_REQUEST_HEADER_BYTES,
            max_request_body_size=MAX_REQUEST_BODY_BYTES,
            asyncore_use_poll=True,  # select() stops at descriptor 1024
            clear_untrusted_proxy_headers=True)
    except OSError as exc:
        log_event(log, "http-bind-failed", logging.ERROR, listen=",".join(args.listen),
                  error=exc.strerror or str(exc))
        return 1
    use_sendfile(listeners)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log_event(log, "http-listening", server="waitress", listen=",".join(args.listen),
              threads=args.threads, connection_limit=connection_limit,
              idle_timeout=args.idle_timeout, pid=os.getpid())
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
