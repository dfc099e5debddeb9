#!/usr/bin/env python3
"""A normal client's requests per second while N slow clients hold connections:
provisiond's HTTP service (as `provisiond serve` runs it) against nginx, same run.

    .venv/bin/python bench/serve/bench_slow_clients.py [--slow 0 --slow 16 ...] [--seconds 5]

Loopback only. A slow client connects, sends a request line and one header, then one more
header line every 2 s and never ends its headers (a "slowloris"). With N of them held, one
normal client fetches, one new connection per request as a booting node does, for
`--seconds`: provisiond's iPXE script for a node (the boot decision, from the store) and from
nginx a static file of the same size. A request that takes over 5 s counts as failed.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from provisiond.config import load_config
from provisiond.inventory import load_inventory
from provisiond.nodes import open_store, provision
from provisiond.serve import HttpProcess

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from slowloris import slow_clients, still_open  # noqa: E402  (the slow-client test's clients)

MAC = "52:54:00:99:00:01"
INVENTORY = f"""\
site: {{name: bench, domain: bench.example, network: 127.0.0.0/8, gateway: 127.0.0.1, server: 127.0.0.1, os: debian12}}
nodes:
  - {{hostname: n1, mac: '{MAC}', role: compute, ip: 127.0.0.11, disk: {{device: vda, size: 40GiB}}}}
"""
REQUEST_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def normal_client(port: int, path: str, seconds: float) -> tuple[float, int]:
    """(requests served per second, failed requests) for one sequential client."""
    served = failed = 0
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request("GET", path)
            reply = connection.getresponse()
            reply.read()
            if reply.status == 200:
                served += 1
            else:
                failed += 1
        except OSError:
            failed += 1
        finally:
            connection.close()
    return served / (time.monotonic() - started), failed


def measure(port: int, path: str, slow: int, seconds: float) -> tuple[float, int, int]:
    """(requests/s, failed, slow connections still open at the end)."""
    with slow_clients(port, slow, "/x") as held:
        time.sleep(0.5)
        rate, failed = normal_client(port, path, seconds)
        still = still_open(held)
    time.sleep(1.0)  # let the server notice the closes before the next round
    return rate, failed, still


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, action="append",
                        help="slow clients held (repeatable; default 0 16 256 1024)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    counts = args.slow or [0, 16, 256, 1024]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    (work / "inventory.yaml").write_text(INVENTORY)
    (work / "provisiond.toml").write_text(f"[serve]\nhttp_port = {free_port()}\n")
    config = load_config(work / "provisiond.toml").with_overrides(
        inventory=work / "inventory.yaml", state_dir=work / "state")
    store = open_store(config.state_dir, load_inventory(config.inventory))
    provision(store, "n1")
    store.close()
    ours = HttpProcess(config, [IPv4Address("127.0.0.1")], None, verbosity=0)
    nginx_port = free_port()
    (work / "www").mkdir()
    # nginx gets as many connections as provisiond's limit (4096), one worker, defaults else
    # (client_header_timeout 60 s).
    (work / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;\n"
        "worker_rlimit_nofile 8192; events { worker_connections 4352; }\n"
        f"http {{ access_log off; default_type text/plain;\n"
        f"  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};\n"
        f"  uwsgi_temp_path {work}; scgi_temp_path {work};\n"
        f"  server {{ listen 127.0.0.1:{nginx_port}; root {work / 'www'}; }} }}\n")
    peer = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)])
    rows = []
    try:
        ours.start()
        script_path = f"/boot/{MAC}.ipxe"
        connection = http.client.HTTPConnection("127.0.0.1", config.http_port, timeout=10)
        connection.request("GET", script_path)
        script = connection.getresponse().read()
        connection.close()
        (work / "www" / "script.ipxe").write_bytes(script)
        for count in counts:
            ours_result = measure(config.http_port, script_path, count, args.seconds)
            nginx_result = measure(nginx_port, "/script.ipxe", count, args.seconds)
            rows.append((count, ours_result, nginx_result))
    finally:
        ours.stop()
        peer.send_signal(signal.SIGQUIT)
        peer.wait(10)
        shutil.rmtree(work)
    print(f"one normal client, {args.seconds:.0f} s per cell, new connection per request "
          f"({len(script)}-byte iPXE script / same-size static file):")
    print("| slow clients held | provisiond req/s (failed, slow still open) "
          "| nginx req/s (failed, slow still open) | provisiond / nginx |")
    print("|---|---|---|---|")
    for count, (o_rate, o_failed, o_open), (n_rate, n_failed, n_open) in rows:
        ratio = o_rate / n_rate if n_rate else float("nan")
        print(f"| {count} | {o_rate:.0f} ({o_failed}, {o_open}) | {n_rate:.0f} ({n_failed}, "
              f"{n_open}) | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
