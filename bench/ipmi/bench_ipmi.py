"""IPMI fan-out benchmark: `power status` wall time over N virtual BMCs, provisiond vs ipmitool.

provisiond: provisiond.power.run_action (pyghmi in sharded worker processes).
Peer: one `ipmitool -I lanplus ... chassis power status` process per BMC, run with the same
concurrency (what most provisioning tools do). Both talk to the same virtual BMCs, which run
in separate processes (100 per process) on 127.0.0.1.

    .venv/bin/python bench/ipmi/bench_ipmi.py --sizes 10 100 500 --mix-live 100 --dead 200
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from provisiond.lab.ports import free_udp_ports
from provisiond.power import BmcTarget, PowerConfig, run_action

PASSWORD = "bench-pw"
PER_PROCESS = 100


def start_bmcs(count: int, password_file: Path) -> tuple[list[int], list[subprocess.Popen]]:
    """`count` virtual BMCs, PER_PROCESS per process; returns their ports and the processes.

    Their output goes to a log file next to the password file (a pipe nobody reads could fill
    and block them).
    """
    ports: list[int] = []
    procs: list[subprocess.Popen] = []
    left = count
    while left:
        n = min(left, PER_PROCESS)
        base = free_udp_ports(n)
        log = password_file.parent / f"vbmc-{base}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "provisiond.lab.vbmc", "--port", str(base),
                 "--count", str(n), "--password-file", str(password_file)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        deadline = time.monotonic() + 30
        while "listening" not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                stop(procs)
                raise RuntimeError(f"virtual BMCs did not start: {log.read_text()!r}")
            time.sleep(0.05)
        ports += range(base, base + n)
        left -= n
    return ports, procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def bench_provisiond(ports: list[int], config: PowerConfig) -> tuple[float, int]:
    targets = [BmcTarget(f"n{p}", "127.0.0.1", p, "admin", PASSWORD) for p in ports]
    start = time.monotonic()
    results = run_action(targets, "status", config)
    elapsed = time.monotonic() - start
    failures = Counter(str(r.error_kind) for r in results if not r.ok)
    examples = {str(r.error_kind): r.message for r in results if not r.ok}
    for kind, count in failures.most_common():
        print(f"  ({count} failed: {kind}, e.g. {examples[kind]})", file=sys.stderr)
    return elapsed, sum(r.ok for r in results)


def bench_ipmitool(ports: list[int], password_file: Path, concurrency: int, timeout: float) -> tuple[float, int]:
    tool = shutil.which("ipmitool")
    if tool is None:
        raise SystemExit("ipmitool is not installed (apt-get install ipmitool)")

    def one(port: int) -> bool:
        try:
            out = subprocess.run(
                [tool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin",
                 "-f", str(password_file), "-R", "1", "-N", str(max(1, int(timeout))),
                 "chassis", "power", "status"],
                capture_output=True, text=True, timeout=timeout * 4,
            )
        except subprocess.TimeoutExpired:
            return False
        return "Chassis Power is" in out.stdout

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ok = sum(pool.map(one, ports))
    return time.monotonic() - start, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--dead", type=int, default=200, help="silent BMCs in the mixed run (0: skip)")
    parser.add_argument("--mix-live", type=int, default=100, help="live BMCs in the mixed run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--no-peer", action="store_true", help="skip ipmitool")
    args = parser.parse_args()
    config = PowerConfig(timeout=args.timeout, concurrency=args.concurrency)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; concurrency {args.concurrency}, timeout {args.timeout:g} s")
    print("| BMCs | provisiond (s) | ok | ipmitool (s) | ok | ipmitool / provisiond |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        password_file = Path(tmp) / "pw"
        password_file.write_text(PASSWORD + "\n")
        for size in args.sizes:
            ports, procs = start_bmcs(size, password_file)
            try:
                ours, ours_ok = bench_provisiond(ports, config)
                if args.no_peer:
                    print(f"| {size} | {ours:.2f} | {ours_ok} | - | - | - |", flush=True)
                    continue
                peer, peer_ok = bench_ipmitool(ports, password_file, args.concurrency, args.timeout)
                print(f"| {size} | {ours:.2f} | {ours_ok} | {peer:.2f} | {peer_ok} | {peer / ours:.1f}x |",
                      flush=True)
            finally:
                stop(procs)
        if args.dead:
            # Live BMCs mixed with silent ones (bound UDP sockets that never answer, like
            # powered-off BMCs behind a switch): the live ones must not be held up.
            ports, procs = start_bmcs(args.mix_live, password_file)
            base = free_udp_ports(args.dead)
            holes = []
            try:
                for port in range(base, base + args.dead):
                    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    holes.append(hole)
                    hole.bind(("127.0.0.1", port))
                mixed = ports + list(range(base, base + args.dead))
                random.Random(1).shuffle(mixed)
                ours, ours_ok = bench_provisiond(mixed, config)
                line = f"| {args.mix_live} live + {args.dead} silent | {ours:.2f} | {ours_ok} |"
                if args.no_peer:
                    print(f"{line} - | - | - |", flush=True)
                else:
                    peer, peer_ok = bench_ipmitool(mixed, password_file, args.concurrency, args.timeout)
                    print(f"{line} {peer:.2f} | {peer_ok} | {peer / ours:.1f}x |", flush=True)
            finally:
                for hole in holes:
                    hole.close()
                stop(procs)

if __name__ == "__main__":
    main()
