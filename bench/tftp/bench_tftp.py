#!/usr/bin/env python3
"""TFTP throughput: provisiond against in.tftpd (tftpd-hpa), dnsmasq and atftpd, same run.

Every server serves the same file from a RAM directory on loopback; the client is always
`atftp` (the packaged client that speaks blksize and RFC 7440 windowsize), so the client's cost
is the same for every server. Each cell is the best of --repeat runs (the machine is shared);
each download is checked byte for byte (sha256). Prints a Markdown table for BENCHMARKS.md.
A second provisiond runs its transfers in the Python loop (its fallback without the native
sender), to show what the native sender is worth in the same run.

    python3 bench/tftp/bench_tftp.py [--size-mib 64] [--clients 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ATFTPD = REPO / ".cache/atftpd/usr/sbin/atftpd"
DNSMASQ_ADDRESS = "127.0.0.53"  # dnsmasq's TFTP port is always 69: give it its own address
PYTHON_LOOP = "provisiond (Python loop)"  # its fallback without the native sender
RUN_LIMIT = 30.0  # a collapsing server is reported as a lower bound, not waited for

SERVE_PROVISIOND = """
import argparse, sys
from pathlib import Path
from provisiond.cli.tftp_cmds import run_tftp
run_tftp(argparse.Namespace(root=Path(sys.argv[1]), address="127.0.0.1", port=int(sys.argv[2]),
                            max_transfers=256, engine=sys.argv[3]))
"""


@dataclass(frozen=True)
class Scenario:
    label: str
    blksize: int
    windowsize: int | None
    clients: int
    servers: tuple[str, ...]


def mib(rate: float) -> str:
    """MiB/s, with a decimal where whole numbers would hide the difference."""
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_servers(root: Path, names: set[str]) -> dict[str, tuple[subprocess.Popen, str, int]]:
    servers: dict[str, tuple[subprocess.Popen, str, int]] = {}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    for name, engine in (("provisiond", "native"), (PYTHON_LOOP, "python")):
        if name in names:
            port = free_port()
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            proc = subprocess.Popen([sys.executable, "-c", SERVE_PROVISIOND, str(root), str(port),
                                     engine], env=env, **quiet)
            servers[name] = (proc, "127.0.0.1", port)
    if "in.tftpd" in names:
        port = free_port()
        proc = subprocess.Popen(["in.tftpd", "-L", "-l", "-a", f"127.0.0.1:{port}", "-s",
                                 "-u", "root", str(root)], **quiet)
        servers["in.tftpd"] = (proc, "127.0.0.1", port)
    if "dnsmasq" in names:
        proc = subprocess.Popen(["dnsmasq", "-k", "--conf-file=/dev/null", "--port=0",
                                 "--enable-tftp", f"--tftp-root={root}",
                                 f"--listen-address={DNSMASQ_ADDRESS}", "--bind-interfaces",
                                 "--user=root", "--group=root", "--pid-file=",
                                 "--log-facility=/dev/null"], **quiet)
        servers["dnsmasq"] = (proc, DNSMASQ_ADDRESS, 69)
    if "atftpd" in names:
        port = free_port()
        proc = subprocess.Popen([str(ATFTPD), "--daemon", "--no-fork", "--port", str(port),
                                 "--bind-address", "127.0.0.1", "--user", "root",
                                 "--group", "root", "--maxthread", "100",
                                 "--logfile", "/dev/null", str(root)], **quiet)
        servers["atftpd"] = (proc, "127.0.0.1", port)
    time.sleep(1.0)
    for name, (proc, _, _) in servers.items():
        if proc.poll() is not None:
            raise SystemExit(f"bench: {name} exited at start (code {proc.returncode})")
    return servers


def fetch_all(host: str, port: int, scenario: Scenario, out_dir: Path,
              digest: str) -> float | None:
    """Run the scenario's clients at once; MiB/s aggregate, None if it exceeded RUN_LIMIT."""
    options = ["--option", f"blksize {scenario.blksize}"]
    if scenario.windowsize:
        options += ["--option", f"windowsize {scenario.windowsize}"]
    outputs = [out_dir / f"out{i}" for i in range(scenario.clients)]
    for path in outputs:
        path.unlink(missing_ok=True)
    started = time.monotonic()
    procs = [subprocess.Popen(["atftp", *options, "-g", "-r", "file", "-l", str(path), host,
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for path in outputs]
    # A blocking wait() returns the moment a client exits; Popen.wait(timeout) would poll
    # with sleeps of up to 50 ms, as long as a whole 64 MiB transfer at 1 GiB/s.
    expired = threading.Event()

    def kill_all() -> None:
        expired.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    killer = threading.Timer(RUN_LIMIT, kill_all)
    killer.start()
    try:
        for proc in procs:
            proc.wait()
        elapsed = time.monotonic() - started
    finally:
        killer.cancel()
    if expired.is_set():
        return None
    total = 0
    for path in outputs:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit(f"bench: {path} differs from the served file ({host}:{port})")
        total += len(data)
    return total / elapsed / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    parser.add_argument("--concurrent-size-mib", type=int, default=16,
                        help="file size per client in the concurrent runs (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    parser.add_argument("--only", default="", metavar="TEXT",
                        help="run only the scenarios whose label contains TEXT")
    args = parser.parse_args()
    for program in ("atftp", "in.tftpd", "dnsmasq"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            raise SystemExit(f"bench: {program} not found: run scripts/install-deps.sh")
    if not ATFTPD.exists():
        raise SystemExit(f"bench: {ATFTPD} missing: run scripts/fetch-atftpd.sh")

    every = ("provisiond", PYTHON_LOOP, "in.tftpd", "dnsmasq", "atftpd")
    windowed = ("provisiond", PYTHON_LOOP, "atftpd")
    n = args.clients
    scenarios = [
        Scenario("1 client, 512 B blocks", 512, None, 1, every),
        Scenario("1 client, 1468 B blocks", 1468, None, 1, every),
        Scenario("1 client, 65464 B blocks", 65464, None, 1, every),
        Scenario("1 client, 1468 B, windowsize 16", 1468, 16, 1, windowed),
        Scenario("1 client, 1468 B, windowsize 64", 1468, 64, 1, windowed),
        Scenario("1 client, 65464 B, windowsize 16", 65464, 16, 1, windowed),
        Scenario(f"{n} clients, 1468 B blocks", 1468, None, n, every),
        Scenario(f"{n} clients, 1468 B, windowsize 16", 1468, 16, n, windowed),
    ]
    scenarios = [scenario for scenario in scenarios if args.only in scenario.label]
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-tftp-", dir=base) as tmp:
        root, out_dir = Path(tmp, "root"), Path(tmp, "out")
        root.mkdir()
        out_dir.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(root, 0o755)
        results: dict[tuple[str, str], float | None] = {}
        servers = start_servers(root, set(every))
        try:
            for scenario in scenarios:
                size = args.size_mib if scenario.clients == 1 else args.concurrent_size_mib
                content = os.urandom(size * 2**20)
                (root / "file").write_bytes(content)
                digest = hashlib.sha256(content).hexdigest()
                # Servers take turns within each repetition, so they share the same noise.
                best: dict[str, float | None] = dict.fromkeys(scenario.servers, 0.0)
                for _ in range(args.repeat):
                    for name in scenario.servers:
                        if best[name] is None:
                            continue  # it exceeded the time limit once: not worth waiting again
                        _, host, port = servers[name]
                        rate = fetch_all(host, port, scenario, out_dir, digest)
                        best[name] = None if rate is None else max(best[name] or 0.0, rate)
                for name, rate in best.items():
                    results[scenario.label, name] = rate
                    shown = mib(rate) if rate else f"did not finish in {RUN_LIMIT:.0f} s"
                    print(f"  {scenario.label:38} {name:10} {shown} MiB/s", file=sys.stderr)
        finally:
            for proc, _, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
            for proc, _, _ in servers.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    sys.path.insert(0, str(REPO))
    from provisiond.tftp import native

    engine = "native sender" if native.load() is not None else "Python loop (native sender not built!)"
    print(f"\nMachine: {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}. provisiond: {engine}. Client: atftp. "
          f"Single client: {args.size_mib} MiB; {n} clients: {args.concurrent_size_mib} MiB "
          f"each (aggregate MiB/s). Best of {args.repeat}.\n")
    print("| scenario | " + " | ".join(every) + " | provisiond / in.tftpd | provisiond / atftpd |")
    print("|---" * (len(every) + 3) + "|")
    for scenario in scenarios:
        cells = []
        for name in every:
            rate = results.get((scenario.label, name), 0.0)
            if name not in scenario.servers:
                cells.append("n/a")
            else:
                cells.append(mib(rate) if rate else f"unfinished in {RUN_LIMIT:.0f} s")
        ours = results.get((scenario.label, "provisiond")) or 0.0
        ratios = []
        for peer in ("in.tftpd", "atftpd"):
            if peer not in scenario.servers:
                ratios.append("n/a")
                continue
            theirs = results.get((scenario.label, peer))
            ratios.append(f"{ours / theirs:.2f}" if theirs else "peer unfinished")
        print(f"| {scenario.label} | " + " | ".join(cells + ratios) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
