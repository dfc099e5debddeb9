#!/usr/bin/env python3
"""DHCP exchanges per second: provisiond vs dnsmasq vs Kea, same veth pair, same run.

Creates two network namespaces joined by a veth pair (no uplink), generates an inventory of
N nodes (default 10,000) whose MACs are exactly the ones perfdhcp simulates, gives every
server the same reservations, and runs `perfdhcp -4 -l IFACE -r RATE -p PERIOD -R N` against
each in turn. Every server persists its leases (provisiond: SQLite store; dnsmasq: its lease
file; Kea: memfile CSV). Everything it creates is removed at the end, also on failure.

Run as root from the repository: `sudo .venv/bin/python bench/dhcp/bench_dhcp.py`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from conftest import stop_process  # noqa: E402  (the tests' helper: SIGTERM, bounded wait, SIGKILL)

NETWORK = ipaddress.IPv4Network("10.214.0.0/16")
SERVER_IP = "10.214.0.1"
CLIENT_IP = "10.214.255.250"  # perfdhcp's address: it acts as a relay (giaddr)
MAC_BASE = 0x020000000000  # perfdhcp -b mac=02:00:00:00:00:00 adds 0..N-1 to the low bytes
TAG = f"{os.getpid() % 100000}"
SERVER_NS, CLIENT_NS = f"pdb-s{TAG}", f"pdb-c{TAG}"
SERVER_IF, CLIENT_IF = f"dbs{TAG}", f"dbc{TAG}"


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout)


def mac(i: int) -> str:
    return (MAC_BASE + i).to_bytes(6, "big").hex(":")


def node_ip(i: int) -> ipaddress.IPv4Address:
    return NETWORK.network_address + 256 + i


@contextmanager
def namespaces() -> Iterator[None]:
    try:
        sh("ip", "netns", "add", SERVER_NS)
        sh("ip", "netns", "add", CLIENT_NS)
        sh("ip", "link", "add", SERVER_IF, "netns", SERVER_NS, "type", "veth",
           "peer", "name", CLIENT_IF, "netns", CLIENT_NS)
        sh("ip", "-n", SERVER_NS, "addr", "add", f"{SERVER_IP}/16", "dev", SERVER_IF)
        sh("ip", "-n", CLIENT_NS, "addr", "add", f"{CLIENT_IP}/16", "dev", CLIENT_IF)
        for ns, dev in ((SERVER_NS, SERVER_IF), (CLIENT_NS, CLIENT_IF)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield
    finally:
        for ns in (SERVER_NS, CLIENT_NS):
            sh("ip", "netns", "del", ns, check=False)


def write_configs(tmp: Path, nodes: int, kea_threads: int = 0, kea_queue: int = 64) -> None:
    lines = [
        "site:", "  name: bench", "  domain: bench.example", f"  network: {NETWORK}",
        f"  gateway: {SERVER_IP}", f"  dns: [{SERVER_IP}]", f"  server: {SERVER_IP}", "nodes:",
    ]
    lines += [
        f"  - {{hostname: n{i:05d}, mac: '{mac(i)}', role: compute, ip: {node_ip(i)}}}"
        for i in range(nodes)
    ]
    (tmp / "inventory.yaml").write_text("\n".join(lines) + "\n")
    (tmp / "dnsmasq.hosts").write_text(
        "".join(f"{mac(i)},{node_ip(i)},n{i:05d}\n" for i in range(nodes))
    )
    kea = {"Dhcp4": {
        "interfaces-config": {"interfaces": [SERVER_IF], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": str(tmp / "kea-leases4.csv")},
        "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3150,
        "host-reservation-identifiers": ["hw-address"],
        "subnet4": [{
            "id": 1, "subnet": str(NETWORK),
            "option-data": [
                {"name": "routers", "data": SERVER_IP},
                {"name": "domain-name-servers", "data": SERVER_IP},
                {"name": "domain-name", "data": "bench.example"},
            ],
            "reservations": [
                {"hw-address": mac(i), "ip-address": str(node_ip(i)), "hostname": f"n{i:05d}"}
                for i in range(nodes)
            ],
        }],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": str(tmp / "kea.log")}]}],
    }}
    (tmp / "kea.json").write_text(json.dumps(kea))
    # Kea at its best: Kea 2.2 ships with multi-threading off; "kea-mt" turns it on.
    kea["Dhcp4"]["multi-threading"] = {"enable-multi-threading": True,
                                       "thread-pool-size": kea_threads,
                                       "packet-queue-size": kea_queue}
    (tmp / "kea-mt.json").write_text(json.dumps(kea))


def provisiond_cmd(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "provisiond", "--inventory", str(tmp / "inventory.yaml"),
            "--state-dir", str(tmp / "state"), "dhcp", "--interface", SERVER_IF]


def dnsmasq_cmd(tmp: Path) -> list[str]:
    return [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--port=0", "--user=root", "--group=root",
            f"--interface={SERVER_IF}", "--bind-interfaces", "--no-ping",
            f"--dhcp-range={NETWORK.network_address},static,{NETWORK.netmask},1h",
            f"--dhcp-hostsfile={tmp / 'dnsmasq.hosts'}", "--dhcp-lease-max=100000",
            f"--dhcp-leasefile={tmp / 'dnsmasq.leases'}", f"--pid-file={tmp / 'dnsmasq.pid'}",
            f"--dhcp-option=3,{SERVER_IP}", f"--dhcp-option=6,{SERVER_IP}",
            "--domain=bench.example"]


def kea_cmd(tmp: Path) -> list[str]:
    return [shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4", "-c", str(tmp / "kea.json")]


def kea_mt_cmd(tmp: Path) -> list[str]:
    return [shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4", "-c", str(tmp / "kea-mt.json")]


def count_provisiond(tmp: Path) -> int:
    with sqlite3.connect(tmp / "state" / "provisiond.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM leases").fetchone()[0])


def count_dnsmasq(tmp: Path) -> int:
    path = tmp / "dnsmasq.leases"
    return len(path.read_text().splitlines()) if path.exists() else 0


def count_kea(tmp: Path) -> int:
    path = tmp / "kea-leases4.csv"
    if not path.exists():
        return 0
    return len({line.split(",")[1] for line in path.read_text().splitlines()[1:] if line})


SERVERS: dict[str, tuple[Callable[[Path], list[str]], Callable[[Path], int]]] = {
    "provisiond": (provisiond_cmd, count_provisiond),
    "dnsmasq": (dnsmasq_cmd, count_dnsmasq),
    "kea": (kea_cmd, count_kea),
    "kea-mt": (kea_mt_cmd, count_kea),
}


def listening_on_67() -> bool:
    out = sh("ip", "netns", "exec", SERVER_NS, "ss", "-H", "-uln", "sport = :67", check=False)
    return bool(out.stdout.strip())


@contextmanager
def running(name: str, tmp: Path) -> Iterator[None]:
    command = SERVERS[name][0](tmp)
    env = {**os.environ, "KEA_PIDFILE_DIR": str(tmp), "KEA_LOCKFILE_DIR": str(tmp),
           "PYTHONPATH": str(REPO)}
    with (tmp / f"{name}.out").open("wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", SERVER_NS, *command], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 120  # provisiond loads and validates N nodes first
            while not listening_on_67():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: {(tmp / f'{name}.out').read_text()}")
                time.sleep(0.2)
            time.sleep(0.5)
            yield
        finally:
            stop_process(proc, grace=15)


def perfdhcp(rate: int, period: int, nodes: int) -> tuple[list[str], dict[str, float]]:
    command = ["perfdhcp", "-4", "-l", CLIENT_IF, "-r", str(rate), "-p", str(period),
               "-R", str(nodes), "-b", f"mac={mac(0)}"]
    out = sh("ip", "netns", "exec", CLIENT_NS, *command, check=False, timeout=period + 60).stdout
    result: dict[str, float] = {}
    match = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", out)
    result["rate"] = float(match.group(1)) if match else 0.0
    drops = re.findall(r"drops ratio: ([\d.]+) %", out)
    if len(drops) == 2:
        result["drops_do"], result["drops_ra"] = float(drops[0]), float(drops[1])
    delays = re.findall(r"avg delay: ([\d.]+) ms", out)
    if len(delays) == 2:
        result["delay_do"], result["delay_ra"] = float(delays[0]), float(delays[1])
    return command, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--rate", type=int, action="append",
                        help="offered DORA/s (repeatable; default 4000 and 8000)")
    parser.add_argument("--period", type=int, default=10, help="seconds per perfdhcp run")
    parser.add_argument("--servers", default="provisiond,dnsmasq,kea,kea-mt",
                        help="kea-mt: Kea with multi-threading on (off by default in Kea 2.2)")
    parser.add_argument("--kea-threads", type=int, default=0,
                        help="kea-mt thread-pool-size (0: Kea's choice, one per CPU)")
    parser.add_argument("--kea-queue", type=int, default=64,
                        help="kea-mt packet-queue-size (default 64, Kea's default)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_dhcp: needs root (network namespaces)", file=sys.stderr)
        return 2
    servers = [s for s in args.servers.split(",") if s]
    rates = args.rate or [4000, 8000]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    tmp_root = Path(tempfile.mkdtemp(prefix="bench-dhcp-"))
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        with namespaces():
            for rate in rates:
                for name in servers:
                    tmp = tmp_root / f"{name}-{rate}"
                    tmp.mkdir()
                    write_configs(tmp, args.nodes, args.kea_threads, args.kea_queue)
                    with running(name, tmp):
                        command, result = perfdhcp(rate, args.period, args.nodes)
                        time.sleep(1)  # let the server store the last leases
                    result["leases"] = SERVERS[name][1](tmp)
                    results[(name, rate)] = result
                    print(f"{name:>10} @ {rate}/s offered: {result['rate']:8.1f} DORA/s, "
                          f"drops {result.get('drops_do', 0):.1f}%/{result.get('drops_ra', 0):.1f}%,"
                          f" avg delay {result.get('delay_do', 0):.1f}/"
                          f"{result.get('delay_ra', 0):.1f} ms, {result['leases']:.0f} leases stored",
                          flush=True)
            print("command: ip netns exec CLIENT_NS " + " ".join(command))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    print("\n| offered DORA/s | server | completed DORA/s | vs provisiond | leases stored |")
    print("|---|---|---|---|---|")
    for rate in rates:
        base = results.get(("provisiond", rate), {}).get("rate")
        for name in servers:
            r = results[(name, rate)]
            ratio = f"{r['rate'] / base:.2f}x" if base else "-"
            print(f"| {rate} | {name} | {r['rate']:.0f} | {ratio} | {r['leases']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
