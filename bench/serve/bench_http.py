#!/usr/bin/env python3
"""Boot-asset throughput over HTTP: provisiond's HTTP service (waitress, sendfile from its I/O loop, as
`provisiond serve` runs it) against nginx (sendfile on), same file, same client, same run.

    .venv/bin/python bench/serve/bench_http.py [--size-mib 64] [--rounds 5] [--parallel 4]

Loopback only. Prints MiB/s for one client (sequential downloads) and for several clients at
once, each server's CPU time per GiB sent, and the ratios provisiond/nginx. Both servers get one worker process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path

from provisiond.config import load_config
from provisiond.serve import HttpProcess

INVENTORY = """\
site: {name: bench, domain: bench.example, network: 127.0.0.0/8, gateway: 127.0.0.1, server: 127.0.0.1, os: debian12}
nodes:
  - {hostname: n1, mac: '52:54:00:99:00:01', role: compute, ip: 127.0.0.11, disk: {device: vda, size: 40GiB}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def download(url: str, size: int) -> float:
    """Seconds for one whole download, as curl times it (the body goes to /dev/null).

    Timed by curl, and waited for without a Python timeout (curl's --max-time bounds it):
    Popen.wait(timeout) polls with sleeps of up to 50 ms, longer than a 64 MiB download here.
    """
    result = subprocess.run(["curl", "-sSf", "--max-time", "120", "-o", "/dev/null", "-w",
                             "%{time_total} %{size_download}", url],
                            check=True, capture_output=True, text=True)
    seconds, got = result.stdout.split()
    if int(got) != size:
        raise SystemExit(f"bench: {url} sent {got} bytes, not {size}")
    return float(seconds)


def measure(url: str, size: int, rounds: int, parallel: int) -> tuple[float, float]:
    download(url, size)  # warm the page cache and the server
    one = min(download(url, size) for _ in range(rounds))
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(download, [url] * (parallel * rounds), [size] * (parallel * rounds)))
    many = time.perf_counter() - started
    mib = size / 2**20
    return mib / one, mib * parallel * rounds / many


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid` and its descendants (nginx's worker), from /proc.

    The server's CPU per GiB served is steadier than its throughput on a shared machine: it
    counts the copies and system calls a server makes, not the time it waited for a core.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def measure_with_cpu(url: str, size: int, rounds: int, parallel: int,
                     pid: int) -> tuple[float, float, float]:
    """measure(), and the server's CPU milliseconds per GiB sent over all its downloads."""
    before = cpu_seconds(pid)
    one, many = measure(url, size, rounds, parallel)
    sent = size * (1 + rounds + parallel * rounds) / 2**30
    return one, many, (cpu_seconds(pid) - before) * 1000 / sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    asset = work / "www" / "linux"
    asset.parent.mkdir()
    asset.write_bytes(os.urandom(args.size_mib * 2**20))
    (work / "inventory.yaml").write_text(INVENTORY)
    (work / "provisiond.toml").write_text(
        f'[serve]\nhttp_port = {free_port()}\n[os.debian12]\nkernel = "{asset}"\ninitrd = "{asset}"\n')
    config = load_config(work / "provisiond.toml").with_overrides(
        inventory=work / "inventory.yaml", state_dir=work / "state")
    ours = HttpProcess(config, [IPv4Address("127.0.0.1")], None, verbosity=0)
    nginx_port = free_port()
    (work / "nginx.conf").write_text(
        f"worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;\n"
        f"  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};\n"
        f"  uwsgi_temp_path {work}; scgi_temp_path {work};\n"
        f"  server {{ listen 127.0.0.1:{nginx_port}; root {asset.parent}; }} }}\n")
    peer = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)])
    try:
        ours.start()
        time.sleep(0.5)
        assert ours.process is not None
        results = {
            "provisiond (waitress, sendfile)": measure_with_cpu(
                f"http://127.0.0.1:{config.http_port}/boot/debian12/linux",
                asset.stat().st_size, args.rounds, args.parallel, ours.process.pid),
            "nginx (sendfile)": measure_with_cpu(f"http://127.0.0.1:{nginx_port}/linux",
                                                 asset.stat().st_size, args.rounds, args.parallel, peer.pid),
        }
    finally:
        ours.stop()
        peer.send_signal(signal.SIGQUIT)
        peer.wait(10)
        shutil.rmtree(work)
    print(f"{args.size_mib} MiB file over loopback, best of {args.rounds} (1 client) and "
          f"{args.parallel} clients x {args.rounds} downloads:")
    for name, (one, many, cpu) in results.items():
        print(f"  {name:42s} 1 client {one:8.0f} MiB/s   {args.parallel} clients {many:8.0f} MiB/s"
              f"   server CPU {cpu:6.0f} ms/GiB")
    (o1, om, oc), (n1, nm, nc) = results.values()
    print(f"  ratio provisiond/nginx: 1 client {o1 / n1:.2f}, {args.parallel} clients {om / nm:.2f}, "
          f"CPU per GiB {oc / nc:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
