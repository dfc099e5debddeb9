#!/usr/bin/env python3
"""Boot storm: N nodes power on at once and walk the whole boot chain, provisiond against the
best peer stacks serving the same files, in the same run.

Stacks (each in turn, the same N, the same files, the same clients):
  provisiond          `provisiond serve` (DHCP, TFTP, HTTP, the store), nodes armed as
                      `provision --all` arms them;
  kea+tftpd+nginx     Kea 2.2 DHCP (multi-threading on), in.tftpd (tftpd-hpa), nginx;
  dnsmasq+nginx       dnsmasq (DHCP and TFTP) and nginx.
The peers' iPXE gets a generic script that chains to /boot/${net0/mac}.ipxe (the usual set-up
with a DHCP server that cannot name a per-node URL); nginx serves the same kernel and initrd
(the Debian 12 installer's), the answer file provisiond renders for the node, and answers
the installer's callbacks with 204.

Network: a bridge without uplink, one server namespace and --client-ns client namespaces
(one client process each, see client.py), all created here with this process's PID in their
names and removed at the end, also on failure or Ctrl-C. Every storm is bounded (--limit).

Run as root from the repository (README set-up): `.venv/bin/python bench/storm/storm.py`
(defaults: --nodes 100, all stacks). Prints per phase p50/p99, retries and failures, the
time until every node is `installing`, and a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _load(path: str):  # the other benches are scripts, not a package: load their helpers
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


bench_dhcp = _load("bench/dhcp/bench_dhcp.py")
sh = bench_dhcp.sh

NETWORK = ipaddress.IPv4Network("10.216.0.0/16")
SERVER_IP = "10.216.0.1"
TAG = f"{os.getpid() % 100000}"
BRIDGE, SERVER_NS, SERVER_IF = f"stbr{TAG}", f"sts{TAG}", f"stsv{TAG}"
MAC_BASE = 0x0A1600000000  # locally administered, unicast
INSTALLER = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
LOADERS = {"undionly.kpxe": Path("/usr/lib/ipxe/undionly.kpxe"),
           "ipxe.efi": Path("/usr/lib/ipxe/ipxe.efi")}
PHASES = ("dhcp-pxe", "tftp", "dhcp-ipxe", "script", "kernel", "initrd", "answer",
          "install-started", "install-finished")
STACKS = ("provisiond", "kea+tftpd+nginx", "dnsmasq+nginx")
PEER_TOKEN = "static-peer-token"


def client_ns(k: int) -> str:
    return f"stc{k}-{TAG}"


def client_if(k: int) -> str:
    return f"stcv{k}-{TAG}"


def node_mac(i: int) -> str:
    return (MAC_BASE + i).to_bytes(6, "big").hex(":")


def node_ip(i: int) -> str:
    return str(NETWORK.network_address + 256 + i)


def batch(namespace: str | None, lines: list[str]) -> None:
    """Many `ip` commands in one process (1000 addresses take a second, not a minute)."""
    prefix = ["ip", "-n", namespace] if namespace else ["ip"]
    subprocess.run([*prefix, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True, timeout=120)


@contextmanager
def network(nodes: int, namespaces: int) -> Iterator[None]:
    """Bridge (no uplink), server namespace, client namespaces; each node's address is on its
    namespace's interface (a /32; the /16 of the base address routes)."""
    created: list[str] = []
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        created.append("bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        for ns, dev, address in [(SERVER_NS, SERVER_IF, SERVER_IP)] + [
                (client_ns(k), client_if(k), str(NETWORK.broadcast_address - 1 - k))
                for k in range(namespaces)]:
            sh("ip", "netns", "add", ns)
            created.append(ns)
            sh("ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name",
               f"{dev}b")
            sh("ip", "link", "set", f"{dev}b", "master", BRIDGE, "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            batch(ns, [f"addr add {address}/16 dev {dev}", f"link set {dev} up",
                       "link set lo up"] + ([f"link set {dev} promisc on"]
                                            if ns != SERVER_NS else []))
        macs = [Path(f"/sys/class/net/{client_if(k)}/address") for k in range(namespaces)]
        client_macs = [sh("ip", "netns", "exec", client_ns(k), "cat", str(m)).stdout.strip()
                       for k, m in enumerate(macs)]
        for k in range(namespaces):
            batch(client_ns(k), [f"addr add {node_ip(i)}/32 dev {client_if(k)}"
                                 for i in range(k, nodes, namespaces)])
        # Permanent neighbours: 1000 ARP entries would pass Linux's default gc_thresh3 (1024,
        # shared by every namespace) and be dropped; permanent entries are not counted.
        batch(SERVER_NS, [f"neigh replace {node_ip(i)} lladdr {client_macs[i % namespaces]} "
                          f"dev {SERVER_IF} nud permanent" for i in range(nodes)])
        yield
    finally:
        for name in reversed(created):
            if name == "bridge":
                sh("ip", "link", "del", BRIDGE, check=False)
            else:
                sh("ip", "netns", "del", name, check=False)


def write_inventory(work: Path, nodes: int, uefi_every: int) -> None:
    lines = ["site:", "  name: storm", "  domain: storm.example", f"  network: {NETWORK}",
             f"  gateway: {SERVER_IP}", f"  dns: [{SERVER_IP}]", f"  server: {SERVER_IP}",
             "  os: debian12", "nodes:"]
    for i in range(nodes):
        firmware = "uefi" if uefi_every and i % uefi_every == 0 else "bios"
        lines.append(f"  - {{hostname: n{i:04d}, mac: '{node_mac(i)}', role: compute, "
                     f"ip: {node_ip(i)}, firmware: {firmware}, disk: {{device: vda, size: 40GiB}}}}")
    (work / "inventory.yaml").write_text("\n".join(lines) + "\n")


def is_uefi(i: int, uefi_every: int) -> bool:
    return bool(uefi_every) and i % uefi_every == 0


# -- the stacks -------------------------------------------------------------------------------


class Daemons:
    """Processes started in the server namespace, stopped by PID (TERM, then KILL)."""

    def __init__(self, work: Path) -> None:
        self.work, self.procs = work, []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        out = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(["ip", "netns", "exec", SERVER_NS, *command], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=REPO, start_new_session=True)
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                log = (self.work / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def wait_listening(daemons: Daemons, ports: list[str], limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while True:
        daemons.check()
        out = sh("ip", "netns", "exec", SERVER_NS, "ss", "-Hlnut").stdout
        if all(f":{port} " in out for port in ports):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not listening on {ports} after {limit:.0f} s: {out}")
        time.sleep(0.3)


SERVE_EXTRA: list[str] = []  # --serve KEY=VALUE: more [serve] lines of provisiond.toml


def start_provisiond(work: Path, daemons: Daemons, nodes: int) -> str:
    tftp = work / "tftp"
    tftp.mkdir(exist_ok=True)
    (work / "provisiond.toml").write_text(
        f'inventory = "{work / "inventory.yaml"}"\nstate_dir = "{work / "state"}"\n'
        f'[serve]\ntftp_root = "{tftp}"\nhttp_port = 8080\n' + "".join(
            f"{line}\n" for line in SERVE_EXTRA))
    # Arm every node as `provisiond provision --all` does, minus the IPMI power-on.
    arm = ("import sys; from provisiond import nodes; from provisiond.inventory import "
           "load_inventory; inv = load_inventory(sys.argv[1]); "
           "store = nodes.open_store(__import__('pathlib').Path(sys.argv[2]), inv); "
           "[nodes.provision(store, n.hostname) for n in inv.nodes]")
    subprocess.run([sys.executable, "-c", arm, str(work / "inventory.yaml"),
                    str(work / "state")], check=True, cwd=REPO, timeout=300)
    daemons.start("provisiond", [sys.executable, "-m", "provisiond", "--config",
                                 str(work / "provisiond.toml"), "serve", "--interface",
                                 SERVER_IF], env={"PYTHONPATH": str(REPO)})
    wait_listening(daemons, ["67", "69", "8080"])
    return f"http://{SERVER_IP}:8080"


def write_www(work: Path, nodes: int) -> Path:
    """nginx's tree: the loader-independent chain script, one script and one answer file per
    node (rendered by provisiond's own renderer), the installer kernel and initrd."""
    from provisiond.inventory import load_inventory
    from provisiond.render import Renderer, ServerInfo

    www = work / "www"
    (www / "boot" / "debian12").mkdir(parents=True, exist_ok=True)
    (www / "preseed").mkdir(exist_ok=True)
    for name in ("linux", "initrd.gz"):
        target = www / "boot" / "debian12" / name
        if not target.exists():
            target.symlink_to(INSTALLER / name)
    base = f"http://{SERVER_IP}"
    (www / "boot" / "boot.ipxe").write_text(f"#!ipxe\nchain {base}/boot/${{net0/mac}}.ipxe\n")
    inventory = load_inventory(work / "inventory.yaml")
    renderer = Renderer(inventory)
    info = ServerInfo(base, token=PEER_TOKEN)
    for node in inventory.nodes[:nodes]:
        (www / "preseed" / node.hostname).write_text(renderer.preseed(node, info))
        (www / "boot" / f"{node.mac}.ipxe").write_text(
            "#!ipxe\n"
            f"echo installing debian12 on {node.hostname}\n"
            f"kernel {base}/boot/debian12/linux initrd=initrd.gz auto=true priority=critical "
            f"url={base}/preseed/{node.hostname} netcfg/disable_autoconfig=true "
            f"netcfg/get_ipaddress={node.ip} netcfg/get_hostname={node.hostname}\n"
            f"initrd {base}/boot/debian12/initrd.gz\nboot\n")
    return www


def start_nginx(work: Path, daemons: Daemons, www: Path) -> None:
    conf = work / "nginx.conf"
    conf.write_text(
        f"worker_processes auto; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;\n"
        "worker_rlimit_nofile 16384;\n"
        "events { worker_connections 8192; }\n"
        "http { access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;\n"
        f"  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};\n"
        f"  uwsgi_temp_path {work}; scgi_temp_path {work};\n"
        f"  server {{ listen {SERVER_IP}:80 backlog=4096; root {www};\n"
        "    location /api/ { return 204; } } }\n")
    daemons.start("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                            "-p", str(work)])


def tftp_root(work: Path) -> Path:
    root = work / "tftproot"
    root.mkdir(exist_ok=True)
    for name, source in LOADERS.items():
        shutil.copyfile(source, root / name)
    os.chmod(root, 0o755)
    return root


def start_kea_stack(work: Path, daemons: Daemons, nodes: int) -> str:
    www = write_www(work, nodes)
    boot_url = f"http://{SERVER_IP}/boot/boot.ipxe"
    pxe = [{"name": "vendor-class-identifier", "data": "PXEClient"}]
    kea = {"Dhcp4": {
        "interfaces-config": {"interfaces": [SERVER_IF], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 0,
                           "name": str(work / "kea-leases4.csv")},
        "multi-threading": {"enable-multi-threading": True, "thread-pool-size": 0,
                            "packet-queue-size": 64},
        "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3150,
        "host-reservation-identifiers": ["hw-address"],
        "next-server": SERVER_IP,
        "client-classes": [
            {"name": "ipxe", "test": "option[77].hex == 'iPXE'", "boot-file-name": boot_url},
            {"name": "efi", "test": "option[93].hex == 0x0007 and not member('ipxe')",
             "boot-file-name": "ipxe.efi", "next-server": SERVER_IP, "option-data": pxe},
            {"name": "bios", "test": "option[93].hex == 0x0000 and not member('ipxe')",
             "boot-file-name": "undionly.kpxe", "next-server": SERVER_IP, "option-data": pxe},
        ],
        "subnet4": [{
            "id": 1, "subnet": str(NETWORK), "next-server": SERVER_IP,
            "option-data": [{"name": "routers", "data": SERVER_IP},
                            {"name": "domain-name-servers", "data": SERVER_IP}],
            "reservations": [{"hw-address": node_mac(i), "ip-address": node_ip(i),
                              "hostname": f"n{i:04d}"} for i in range(nodes)],
        }],
        "loggers": [{"name": "kea-dhcp4", "severity": os.environ.get("STORM_KEA_LOG", "WARN"), "debuglevel": 55,
                     "output_options": [{"output": str(work / "kea.log")}]}],
    }}
    (work / "kea.json").write_text(json.dumps(kea))
    daemons.start("kea", [shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4", "-c",
                          str(work / "kea.json")],
                  env={"KEA_PIDFILE_DIR": str(work), "KEA_LOCKFILE_DIR": str(work)})
    daemons.start("in.tftpd", ["in.tftpd", "-L", "-s", "-u", "root", "-a", f"{SERVER_IP}:69",
                               str(tftp_root(work))])
    start_nginx(work, daemons, www)
    wait_listening(daemons, ["67", "69", "80"])
    return ""


def start_dnsmasq_stack(work: Path, daemons: Daemons, nodes: int) -> str:
    www = write_www(work, nodes)
    (work / "dnsmasq.hosts").write_text(
        "".join(f"{node_mac(i)},{node_ip(i)},n{i:04d}\n" for i in range(nodes)))
    daemons.start("dnsmasq", [
        shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground",
        "--conf-file=/dev/null", "--port=0", "--user=root", "--group=root",
        f"--interface={SERVER_IF}", "--bind-interfaces", "--no-ping", "--log-facility=/dev/null",
        f"--dhcp-range={NETWORK.network_address},static,{NETWORK.netmask},1h",
        f"--dhcp-hostsfile={work / 'dnsmasq.hosts'}", "--dhcp-lease-max=100000",
        f"--dhcp-leasefile={work / 'dnsmasq.leases'}", f"--pid-file={work / 'dnsmasq.pid'}",
        f"--dhcp-option=3,{SERVER_IP}", f"--dhcp-option=6,{SERVER_IP}",
        "--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:efi64,option:client-arch,7",
        f"--dhcp-boot=tag:ipxe,http://{SERVER_IP}/boot/boot.ipxe",
        f"--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,{SERVER_IP}",
        f"--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,{SERVER_IP}",
        "--enable-tftp", f"--tftp-root={tftp_root(work)}", f"--tftp-max={max(50, 2 * nodes)}",
    ])
    start_nginx(work, daemons, www)
    wait_listening(daemons, ["67", "69", "80"])
    return ""


STARTERS = {"provisiond": start_provisiond, "kea+tftpd+nginx": start_kea_stack,
            "dnsmasq+nginx": start_dnsmasq_stack}


# -- one storm --------------------------------------------------------------------------------


def storm(stack: str, nodes: int, args: argparse.Namespace, work: Path) -> dict:
    work.mkdir(parents=True)
    write_inventory(work, nodes, args.uefi_every)
    daemons = Daemons(work)
    clients: list[subprocess.Popen] = []
    try:
        api = STARTERS[stack](work, daemons, nodes)
        time.sleep(1.0)
        start = time.monotonic() + 3.0  # every client process is up and listening by then
        deadline = start + args.limit
        outs = []
        for k in range(args.client_ns):
            plan = {
                "interface": client_if(k), "start": start, "deadline": deadline,
                "jitter": args.jitter, "seed": k, "api": api if k == 0 else "",
                "poll_ip": str(NETWORK.broadcast_address - 1 - k),
                "all_hosts": [f"n{i:04d}" for i in range(nodes)],
                "nodes": [{"index": i, "mac": node_mac(i), "ip": node_ip(i),
                           "host": f"n{i:04d}", "uefi": is_uefi(i, args.uefi_every),
                           "delay": (i // args.wave_size) * args.wave_interval
                           if args.wave_size else 0.0}
                          for i in range(k, nodes, args.client_ns)],
            }
            (work / f"plan{k}.json").write_text(json.dumps(plan))
            outs.append(work / f"out{k}.jsonl")
            clients.append(subprocess.Popen(
                ["ip", "netns", "exec", client_ns(k), sys.executable,
                 str(REPO / "bench/storm/client.py"), str(work / f"plan{k}.json"),
                 str(outs[-1])], start_new_session=True))
        load_before = os.getloadavg()[0]
        for proc in clients:
            try:
                proc.wait(max(1.0, deadline - time.monotonic() + 60))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        daemons.check()
        waves = (f" (waves of {args.wave_size} every {args.wave_interval:g} s)"
                 if args.wave_size else "")
        return summarize(stack, nodes, start, outs, load_before, os.getloadavg()[0], waves)
    finally:
        for proc in clients:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        daemons.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(stack: str, nodes: int, start: float, outs: list[Path], load_before: float,
              load_after: float, waves: str) -> dict:
    records, seen = [], {}
    for path in outs:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if "installing_seen" in item:
                seen.update(item["installing_seen"])
            else:
                records.append(item)
    phases = {}
    for name in PHASES:
        done = [r["phases"][name] for r in records
                if name in r["phases"] and r["phases"][name]["end"]]
        phases[name] = {
            "p50": percentile([p["end"] - p["start"] for p in done], 0.5),
            "p99": percentile([p["end"] - p["start"] for p in done], 0.99),
            "done": len(done),
            "retries": sum(r["phases"].get(name, {}).get("retries", 0) for r in records),
        }
    failures = [r for r in records if r["failed"]] + [{}] * (nodes - len(records))
    answered = [r["phases"]["answer"]["end"] - start for r in records
                if r["phases"].get("answer", {}).get("end")]
    all_answered = max(answered) if len(answered) == nodes else None
    all_installing = (max(seen.values()) - start) if len(seen) == nodes else None
    retried: dict[str, int] = {}  # why nodes retried, by cause (time stripped)
    for r in records:
        for name, phase in r["phases"].items():
            for why in phase.get("retried", []):
                cause = f"{name}: {why.split(': ', 1)[-1]}"
                retried[cause] = retried.get(cause, 0) + 1
    reasons: dict[str, int] = {}
    for r in failures:
        reason = r.get("failed", "no result")
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"stack": stack, "nodes": nodes, "waves": waves, "phases": phases, "failures": len(failures),
            "reasons": reasons, "retried": retried, "all_answer_fetched": all_answered,
            "all_installing_api": all_installing, "load": (load_before, load_after)}


def show(result: dict) -> None:
    s = result
    print(f"\n== {s['stack']}, N={s['nodes']}{s['waves']}: failures {s['failures']} {s['reasons'] or ''}, "
          f"all answer files fetched at {fmt(s['all_answer_fetched'])} s, all installing in "
          f"the API at {fmt(s['all_installing_api'])} s, load {s['load'][0]:.1f} -> "
          f"{s['load'][1]:.1f}", flush=True)
    for cause, count in sorted(s["retried"].items(), key=lambda item: -item[1])[:10]:
        print(f"   retried {count} x {cause}", flush=True)
    for name, p in s["phases"].items():
        print(f"   {name:17} done {p['done']:5}  p50 {p['p50']:7.2f} s  p99 {p['p99']:7.2f} s"
              f"  retries {p['retries']}", flush=True)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: list[dict]) -> None:
    print("\n| N | stack | all answer files fetched (s) | all `installing` in the API (s) | "
          "failures | vs provisiond | " + " | ".join(f"{p} p50/p99 (s)" for p in PHASES) + " |")
    print("|---" * (6 + len(PHASES)) + "|")
    ours = {r["nodes"]: r["all_answer_fetched"] for r in results if r["stack"] == "provisiond"}
    for r in results:
        base, theirs = ours.get(r["nodes"]), r["all_answer_fetched"]
        ratio = f"{theirs / base:.2f}" if base and theirs else "-"
        cells = [f"{r['phases'][p]['p50']:.2f}/{r['phases'][p]['p99']:.2f}"
                 + (f" ({r['phases'][p]['retries']} retries)" if r["phases"][p]["retries"] else "")
                 for p in PHASES]
        print(f"| {r['nodes']}{r['waves']} | {r['stack']} | {fmt(r['all_answer_fetched'])} | "
              f"{fmt(r['all_installing_api'])} | {r['failures']} | {ratio} | "
              + " | ".join(cells) + " |")
    print("\n'vs provisiond': the stack's time until every answer file was fetched, divided by "
          "provisiond's (above 1: provisiond was faster).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, action="append",
                        help="nodes per storm (repeatable; default 100)")
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help=f"comma-separated, of {', '.join(STACKS)}")
    parser.add_argument("--client-ns", type=int, default=2,
                        help="client namespaces, one client process each (default 2)")
    parser.add_argument("--uefi-every", type=int, default=2,
                        help="every k-th node is UEFI (default 2: half; 0: none)")
    parser.add_argument("--jitter", type=float, default=2.0,
                        help="power-on spread: each node starts within this many seconds")
    parser.add_argument("--wave-size", type=int, default=0,
                        help="power on in waves of this many nodes, as site.power_waves does "
                        "(default 0: all at once)")
    parser.add_argument("--wave-interval", type=float, default=0.0,
                        help="seconds from one wave's start to the next's")
    parser.add_argument("--limit", type=float, default=900,
                        help="seconds one storm may take; unfinished nodes count as failed")
    parser.add_argument("--serve", action="append", default=[], metavar="KEY=VALUE",
                        help="a [serve] setting of provisiond.toml, e.g. tftp_max_transfers=1024")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, daemon logs, results)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("storm: needs root (namespaces, a bridge, DHCP)", file=sys.stderr)
        return 2
    SERVE_EXTRA.extend(args.serve)
    stacks = [s for s in args.stacks.split(",") if s]
    for stack in stacks:
        if stack not in STARTERS:
            parser.error(f"unknown stack {stack!r}; one of {', '.join(STACKS)}")
    sizes = args.nodes or [100]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"load {os.getloadavg()[0]:.2f}; command: {' '.join(sys.argv)}", flush=True)
    for path in [INSTALLER / "linux", INSTALLER / "initrd.gz", *LOADERS.values()]:
        path.read_bytes()  # in the page cache before the first stack, as for the others
    work = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    os.chmod(work, 0o755)
    results = []
    try:
        with ExitStack() as stack:
            stack.enter_context(network(max(sizes), args.client_ns))
            for nodes in sizes:
                for name in stacks:
                    result = storm(name, nodes, args, work / f"{name}-{nodes}")
                    show(result)
                    results.append(result)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
