"""`provisiond dns sync` against a real BIND on loopback, beside BIND's own nsupdate.

For N nodes (default 200, at most 240: one /24): the CLI's start-up alone, the first sync (two
signed AXFRs, then one signed update per record, 2N updates over one TCP connection), the
second sync (the AXFRs only: nothing to change), and the peer: `nsupdate -v` (TCP) sending the
same 2N records as 2N signed updates (no prerequisites, no ownership marker) to a fresh BIND. Prints a Markdown table.
Each row is the best of `--runs` whole runs (default 3): wall seconds, and the CPU seconds the
client process used itself (steadier than the wall time on a shared machine).
Run from the repository: `.venv/bin/python bench/dns/bench_dns_sync.py [--nodes N] [--runs N]`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from bindlab import dns_site_yaml, running_bind  # noqa: E402  (the tests' BIND: the same config everywhere)


def timed(command: list[str], **kwargs: object) -> tuple[float, float]:
    """Wall seconds of one command, and the CPU seconds (user + system) it used itself."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, timeout=3600, **kwargs)  # type: ignore[call-overload]
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def one_run(workdir: Path, nodes: int) -> list[tuple[str, tuple[float, float]]]:
    """Every row once, each server a fresh BIND."""
    rows = []
    for name in ("provisiond", "nsupdate"):
        (workdir / name).mkdir()
    with running_bind(workdir / "provisiond") as bind:
        inventory = workdir / "inventory.yaml"
        inventory.write_text(dns_site_yaml(bind) + "".join(
            f"  - {{hostname: n{i}, mac: '52:54:00:20:00:{i:02x}', role: compute, ip: 10.213.0.{i + 10}}}\n"
            for i in range(nodes)))
        sync = [sys.executable, "-m", "provisiond", "--inventory", str(inventory), "--state-dir",
                str(workdir / "state"), "dns", "sync"]
        rows.append(("provisiond --help (the CLI's start-up, part of every sync)",
                     timed([sys.executable, "-m", "provisiond", "--help"])))
        rows.append((f"provisiond dns sync, first ({2 * nodes} updates)", timed(sync)))
        rows.append(("provisiond dns sync, second (nothing to change)", timed(sync)))
        assert bind.dig(f"n{nodes - 1}.lab.example", "A") == [f"10.213.0.{nodes + 9}"]
    with running_bind(workdir / "nsupdate") as bind:
        script = "".join(f"zone lab.example\nupdate add n{i}.lab.example. 300 A 10.213.0.{i + 10}\nsend\n"
                         f"zone 0.213.10.in-addr.arpa\nupdate add {i + 10}.0.213.10.in-addr.arpa. 300 PTR "
                         f"n{i}.lab.example.\nsend\n" for i in range(nodes))
        rows.append((f"nsupdate -v, same records ({2 * nodes} updates)",
                     timed(["nsupdate", "-v", "-k", str(bind.key_file)],
                           input=f"server 127.0.0.1 {bind.port}\n" + script, text=True)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=200, choices=range(1, 241), metavar="N (1-240)")
    parser.add_argument("--runs", type=int, default=3, help="whole runs; each row's best is shown")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(Path(tmp), args.nodes))
    print(f"| {args.nodes} nodes, best of {args.runs} runs | wall seconds | client CPU seconds |\n|---|---|---|")
    for index, (what, _) in enumerate(runs[0]):
        wall = min(run[index][1][0] for run in runs)
        cpu = min(run[index][1][1] for run in runs)
        print(f"| {what} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
