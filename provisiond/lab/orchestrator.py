"""The lab run: network, virtual BMCs with QEMU machines, `provisiond serve` on the bridge,
`provisiond provision --all` over IPMI, progress until every node is done, a report, and
removal of everything it made.

The lab drives nodes only through their BMCs and serves them only through provisiond: what a
lab shows is what provisiond does with real boxes. Everything it starts runs under PIDs it
records in /run/provisiond/labs/<pid>.json (for `provisiond lab down`) and stops on every exit path: a normal end,
an error, Ctrl-C or SIGTERM. A SIGKILL of the lab takes its children down too
(PR_SET_PDEATHSIG); `lab down` and the next lab sweep the namespace such a run left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from provisiond.errors import UserError
from provisiond.lab import network as lab_network
from provisiond.lab.machine import accelerator, die_with_parent
from provisiond.lab.plan import SERVER, SITE_NETWORK, LabNode, inventory_yaml, phase_times
from provisiond.lab.qemu_bmc import BmcProcess
from provisiond.lifecycle import State
from provisiond.store import Store

RUN_ROOT = Path("/var/tmp/provisiond-lab")  # default workdirs: disks, logs, state
REGISTRY = Path("/run/provisiond/labs")  # one record per running lab, wherever its workdir is
PROVISIOND = [sys.executable, "-m", "provisiond"]
LAB_STATE_DEADLINE = 7200  # seconds a lab node may stay installed or configuring
ORDER = [State.NEW, State.POWERING_ON, State.PXE, State.INSTALLING, State.INSTALLED,
         State.CONFIGURING, State.READY]


class LabInterrupted(Exception):
    """SIGTERM or SIGINT reached the lab: stop and clean up."""


@dataclass
class NodeProgress:
    node: LabNode
    state: str = "new"
    reason: str | None = None
    entered: dict[str, float] = field(default_factory=dict)  # state -> when first entered
    deploy: dict[str, float] = field(default_factory=dict)  # image deploy phase -> seconds
    facts: dict[str, object] = field(default_factory=dict)  # layout check, agent facts


class Lab:
    """One lab run in `workdir`. up() builds it, provision() powers the nodes on over IPMI,
    watch() follows them, down() removes everything (idempotent)."""

    def __init__(self, nodes: list[LabNode], install: str, workdir: Path,
                 out: Callable[[str], None] = print, extra_config: str = "",
                 openstack: bool = False) -> None:
        self.nodes = nodes
        self.install = install
        self.openstack = openstack
        self.workdir = workdir
        self.out = out
        self.extra_config = extra_config
        self.network: lab_network.LabNetwork | None = None
        self.bmcs: BmcProcess | None = None
        self.serve: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.provisioned_at: float | None = None
        self.reported = False
        self.progress = {node.hostname: NodeProgress(node) for node in nodes}

    # -- files -----------------------------------------------------------------------------

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.yaml"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def config(self) -> Path:
        return self.workdir / "provisiond.toml"

    @property
    def serve_log(self) -> Path:
        return self.workdir / "serve.log"

    def machine_dir(self, hostname: str) -> Path:
        return self.workdir / "machines" / hostname

    def serial_tail(self, hostname: str, chars: int = 2500) -> str:
        path = self.machine_dir(hostname) / "serial.log"
        if not path.exists():
            return "(no serial output)"
        return path.read_bytes()[-chars:].decode(errors="replace")

    def globals(self) -> list[str]:
        return ["--inventory", str(self.inventory), "--state-dir", str(self.state_dir),
                "--config", str(self.config)]

    def _say(self, message: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.0f}s] {message}")

    def _record(self) -> None:
        state = {
            "pid": os.getpid(), "workdir": str(self.workdir),
            "netns": self.network.name if self.network else None,
            "bmc_pid": self.bmcs.pid if self.bmcs else None,
            "serve_pid": self.serve.pid if self.serve else None,
            "nodes": [node.hostname for node in self.nodes],
        }
        REGISTRY.mkdir(parents=True, exist_ok=True)
        self.record_path.write_text(json.dumps(state, indent=1) + "\n")
        self.pid_file.write_text(f"{os.getpid()}\n")  # `lab down --workdir DIR` finds it

    @property
    def ssh_key(self) -> Path:
        """The lab's own SSH key: root on every node accepts it (`provisiond lab ssh HOST`)."""
        return self.workdir / "ssh_key"

    def _ssh_public_key(self) -> str:
        if not self.ssh_key.exists():
            result = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisiond-lab",
                                     "-f", str(self.ssh_key)], capture_output=True, text=True, timeout=60,
                                    check=False)
            if result.returncode != 0:
                raise UserError(f"lab: ssh-keygen could not make {self.ssh_key}: {result.stderr.strip()} "
                                "(install openssh-client)")
        return self.ssh_key.with_suffix(".pub").read_text().strip()

    @property
    def pid_file(self) -> Path:
        return self.workdir / "lab.pid"

    @property
    def record_path(self) -> Path:
        return REGISTRY / f"{os.getpid()}.json"

    # -- up ----------------------------------------------------------------------------------

    def up(self) -> None:
        """Network, files, BMCs (VMs off), serve. Raises UserError with the reason."""
        if os.geteuid() != 0:
            raise UserError("the lab needs root (network namespace, bridge, taps, DHCP on port 67)")
        for leftover in lab_network.sweep():
            self._say(f"removed {leftover}, left by a lab that was killed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._record()  # from now on `provisiond lab down` finds this lab
        (self.workdir / "tftp").mkdir(exist_ok=True)
        password_file = self.workdir / "bmc.pass"
        password_file.write_text(os.urandom(8).hex() + "\n")
        password_file.chmod(0o600)
        self.inventory.write_text(inventory_yaml(self.nodes, self.install, str(password_file),
                                                 openstack=self.openstack, ssh_key=self._ssh_public_key()))
        deadline = LAB_STATE_DEADLINE * (2 if self.openstack else 1)
        self.config.write_text(
            "[os.debian12]\n"
            'cmdline = "console=ttyS0,115200n8"\n'
            # TCG guests on a few shared cores: a first boot took 20-30 min under load (the
            # default deadline of `installed` is 30 min); the lab's --timeout bounds the run.
            "[timeouts]\n"
            f"installed = {deadline}\n"
            f"configuring = {deadline}\n" + self.extra_config)
        if self.install == "image":
            self._build_images()
        self._say(f"QEMU accelerator: {accelerator()}")
        os.environ["PROVISIOND_LAB_ACCEL"] = "kvm" if accelerator() == "kvm" else "tcg"
        self.network = lab_network.LabNetwork(IPv4Interface(f"{SERVER}/{SITE_NETWORK.split('/')[1]}"))
        self.network.create()
        self._record()
        self._say(f"lab network: namespace {self.network.name}, bridge {self.network.bridge} "
                  f"{SERVER}/24, no uplink")
        machines = []
        for node in self.nodes:
            machines.append({
                "name": node.hostname, "mac": node.mac, "tap": self.network.add_tap(),
                "netns": self.network.name, "firmware": node.firmware,
                "memory_mib": node.memory_mib, "cpus": node.cpus, "disk_gib": 30, "port": node.bmc_port,
                "workdir": str(self.machine_dir(node.hostname)),
            })
        plan = {"address": "127.0.0.1", "username": "admin", "password_file": str(password_file),
                "machines": machines}
        self.bmcs = BmcProcess(plan, self.workdir / "bmc-plan.json", self.workdir / "bmc.log")
        self._record()
        for node in self.nodes:
            self._say(f"{node.hostname}: {node.role}, {node.firmware}, {node.memory_mib} MiB, {node.cpus} vCPU, "
                      f"BMC 127.0.0.1:{node.bmc_port}, {node.ip} {node.mac}")
        self._start_serve()

    def _build_images(self, timeout: float = 3600.0) -> None:
        """`provisiond image build`: the deploy ramdisk and a root image per role, from the
        content-keyed cache when nothing changed (seconds), else built natively (minutes)."""
        self._say("provisiond image build (cached builds are reused)")
        log_path = self.workdir / "image-build.log"
        with log_path.open("w") as log:
            process = subprocess.Popen([*PROVISIOND, *self.globals(), "image", "build"],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       preexec_fn=die_with_parent)
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                self.out(f"    {line.rstrip()}")
            code = process.wait(timeout)
        if code != 0:
            raise UserError(f"provisiond image build failed ({code}); see {log_path}. Without "
                            "the image install method, use --install preseed")

    def _start_serve(self, timeout: float = 60.0) -> None:
        assert self.network is not None
        with self.serve_log.open("ab") as log:
            self.serve = subprocess.Popen(
                [*self.network.exec_prefix(), *PROVISIOND, *self.globals(), "serve",
                 "--interface", self.network.bridge, "--tftp-root", str(self.workdir / "tftp")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, preexec_fn=die_with_parent)
        self._record()
        deadline = time.monotonic() + timeout
        while b"event=serving" not in self.serve_log.read_bytes():
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise UserError(f"provisiond serve did not start on the lab bridge:\n"
                                f"{self.serve_log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        self._say(f"provisiond serve: DHCP, TFTP, HTTP on {SERVER} (log {self.serve_log})")

    # -- provision and watch -------------------------------------------------------------------

    def provision(self) -> None:
        """`provisiond provision --all`: one-time PXE and power on, over IPMI only."""
        self.provisioned_at = time.time()
        result = subprocess.run([*PROVISIOND, *self.globals(), "provision", "--all"],
                                capture_output=True, text=True, timeout=300, check=False)
        (self.workdir / "provision.log").write_text(result.stdout + result.stderr)
        for line in result.stdout.splitlines():
            if line.strip():
                self.out(f"    {line}")
        if result.returncode != 0:
            raise UserError(f"provisiond provision --all failed ({result.returncode}):\n"
                            f"{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _poll(self, store: Store, quiet: bool = False) -> None:
        since = self.provisioned_at or 0
        for hostname, progress in self.progress.items():
            record = store.node(hostname)
            deploy_started: dict[str, float] = {}
            for event in store.events(hostname=hostname, limit=1000):
                if event.ts < since:
                    continue
                kind = event.kind
                if kind.startswith("state:"):
                    state = kind.split(":", 1)[1]
                    if state not in progress.entered and not quiet:  # every state, even one
                        self._say(f"{hostname}: {state}")             # passed between two polls
                    progress.entered.setdefault(state, event.ts)
                elif kind.startswith("deploy:"):  # the image method's phases, started/done
                    phase = kind.split(":", 1)[1]
                    if event.detail.get("status") == "started":
                        deploy_started[phase] = event.ts
                    elif phase in deploy_started:
                        progress.deploy[phase] = event.ts - deploy_started[phase]
                elif kind == "agent:layout":
                    problems = event.detail.get("problems") or []
                    progress.facts["layout"] = "matches the model" if event.detail.get("ok") \
                        else "; ".join(map(str, problems))
                elif kind == "agent:fact":
                    name = str(event.detail.get("fact"))
                    reader = getattr(store, "fact", None)  # facts are kept by the agent's store
                    progress.facts[name] = reader(hostname, name) if reader else "reported"
            if record.state != progress.state:
                progress.state = str(record.state)
                progress.reason = record.reason
                if record.reason and not quiet:
                    self._say(f"{hostname}: {record.state} ({record.reason})")

    def watch(self, until: State = State.READY, timeout: float = 3600.0,
              poll: float = 2.0) -> bool:
        """Follow every node until it reached `until` (or ready) or failed, bounded by
        `timeout`. True if all reached it. On a failure or the deadline, the serial tail of
        each node that did not make it is shown."""
        store = Store.in_state_dir(self.state_dir)
        target = ORDER.index(until)
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._poll(store)
                states = {h: State(p.state) for h, p in self.progress.items()}
                done = {h for h, s in states.items()
                        if s is State.FAILED or (s in ORDER and ORDER.index(s) >= target)}
                if len(done) == len(states):
                    break
                if self.bmcs is not None and not self.bmcs.alive():
                    raise UserError(f"the virtual BMC process died:\n{self.bmcs.output()[-2000:]}")
                if self.serve is not None and self.serve.poll() is not None:
                    raise UserError(f"provisiond serve exited:\n"
                                    f"{self.serve_log.read_text(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    for hostname in sorted(set(states) - done):
                        self._say(f"{hostname}: still {states[hostname]} after {timeout:.0f} s")
                    break
                time.sleep(poll)
        finally:
            store.close()
        ok = True
        for hostname, progress in self.progress.items():
            state = State(progress.state)
            if state is State.FAILED or state not in ORDER or ORDER.index(state) < target:
                ok = False
                self.out(f"--- {hostname} ({progress.state}): serial console, last lines ---\n"
                         f"{self.serial_tail(hostname)}\n---")
        return ok

    def report(self) -> list[dict[str, object]]:
        """Per node: final state, reason, time per phase, facts the agent reported (read from
        the store again, so a report after an interrupt shows how far each node got)."""
        if self.state_dir.exists():
            store = Store.in_state_dir(self.state_dir)
            try:
                self._poll(store, quiet=True)
            finally:
                store.close()
        self.reported = True
        rows = []
        for hostname, progress in self.progress.items():
            rows.append({
                "node": hostname, "role": progress.node.role, "firmware": progress.node.firmware,
                "state": progress.state, "reason": progress.reason,
                "phases": phase_times(progress.entered), "deploy": progress.deploy,
                "facts": progress.facts,
            })
        (self.workdir / "report.json").write_text(json.dumps(rows, indent=1) + "\n")
        return rows

    # -- down --------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop serve, the BMCs (and with them every VM), remove the network. Idempotent."""
        if self.serve is not None:
            if self.serve.poll() is None:
                self.serve.terminate()
                try:
                    self.serve.wait(30)
                except subprocess.TimeoutExpired:
                    self.serve.kill()
                    self.serve.wait(10)
            self.serve = None
        if self.bmcs is not None:
            self.bmcs.stop()
            self.bmcs = None
        if self.network is not None:
            self.network.remove()
            self.network = None
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def _alive(pid: int | None) -> bool:
    """True if `pid` runs and is a provisiond process (a recorded PID may have been reused)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"provisiond" in cmdline


def running_labs(registry: Path = REGISTRY) -> list[dict]:
    """The records of labs whose process still runs."""
    labs = []
    for record_path in sorted(registry.glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(record.get("pid")):
            labs.append(record)
    return labs


def find_lab(pid: int | None = None, registry: Path = REGISTRY, workdir: Path | None = None,
             state_dir: Path | None = None) -> dict:
    """The one running lab to act on: the one of `pid`, of `workdir` (its `lab.pid` names it),
    or whose store is `state_dir`; without any of them, the only lab running."""
    labs = select_labs(pid=pid, workdir=workdir, state_dir=state_dir, registry=registry)
    if len(labs) > 1:
        listing = "; ".join(f"PID {lab['pid']} in {lab.get('workdir')}" for lab in labs)
        raise UserError(f"{len(labs)} labs are running ({listing}): choose one with --pid or "
                        "--workdir (lab down: --all stops every one)")
    return labs[0]


def select_labs(pid: int | None = None, workdir: Path | None = None, state_dir: Path | None = None,
                registry: Path = REGISTRY) -> list[dict]:
    """The running labs a command means: with `pid`, `workdir` or `state_dir` the one lab they
    name (a UserError if none runs there), else every running lab (the caller decides whether
    more than one is acceptable)."""
    labs = running_labs(registry)
    wanted = None
    if workdir is not None:
        pid_file = workdir / "lab.pid"
        if not pid_file.exists():
            raise UserError(f"--workdir {workdir}: no lab runs there (no {pid_file}); "
                            "`provisiond lab down --all` stops every lab")
        wanted, where = int(pid_file.read_text().split()[0]), f"in {workdir}"
    elif state_dir is not None:
        matching = [lab for lab in labs
                    if Path(lab.get("workdir", "")).resolve() / "state" == state_dir.resolve()]
        if not matching:
            raise UserError(f"--state-dir {state_dir}: no running lab keeps its store there "
                            "(a lab's store is <workdir>/state)")
        return matching
    elif pid is not None:
        wanted, where = pid, f"with PID {pid}"
    if wanted is not None:
        labs = [lab for lab in labs if lab.get("pid") == wanted]
        if not labs:
            raise UserError(f"no running lab {where}: `provisiond lab down --all` stops every lab "
                            "and removes what killed labs left")
    if not labs:
        raise UserError("no running lab: start one with `provisiond lab`")
    return labs


def _stop_lab(record: dict, registry: Path, out: Callable[[str], None], timeout: float) -> None:
    """SIGTERM to the lab (it cleans up itself); if that does not happen in time, its children
    are killed by PID and its namespace removed."""
    lab_pid = record.get("pid")
    if _alive(lab_pid) and lab_pid != os.getpid():
        out(f"stopping lab process {lab_pid} ({record.get('workdir')})")
        os.kill(lab_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(lab_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for key in ("serve_pid", "bmc_pid"):
        child = record.get(key)
        if _alive(child):
            out(f"killing {key.split('_')[0]} process {child}")
            os.kill(child, signal.SIGKILL)
    if record.get("netns"):
        lab_network.LabNetwork(name=record["netns"]).remove()
    with contextlib.suppress(FileNotFoundError):
        (registry / f"{lab_pid}.json").unlink()


def lab_down(pid: int | None = None, workdir: Path | None = None, state_dir: Path | None = None,
             every: bool = False, registry: Path = REGISTRY, out: Callable[[str], None] = print,
             timeout: float = 60.0) -> int:
    """`provisiond lab down`: stop the lab named by `pid`, `workdir` or `state_dir`, or the only
    one running, or with `every` all of them; always remove what killed labs left. Another
    running lab is never touched. A named lab that was killed is not an error: what it left is
    removed. Returns how many running labs were stopped."""
    named = pid is not None or workdir is not None or state_dir is not None
    if every and named:
        raise UserError("lab down: --all stops every lab; do not name one as well")
    if every:
        labs = running_labs(registry)
    else:
        try:
            labs = [find_lab(pid=pid, workdir=workdir, state_dir=state_dir, registry=registry)]
        except UserError:
            if named and not _was_killed(pid, workdir, registry):
                raise
            if running_labs(registry) and not named:
                raise
            labs = []  # nothing runs (or the named lab was killed): only leftovers go
    return down_recorded(labs, registry, out, timeout)


def _was_killed(pid: int | None, workdir: Path | None, registry: Path) -> bool:
    """The named lab has a record but its process is gone (SIGKILL: no clean-up ran)."""
    if workdir is not None and (workdir / "lab.pid").exists():
        pid = int((workdir / "lab.pid").read_text().split()[0])
    return pid is not None and (registry / f"{pid}.json").exists() and not _alive(pid)


def down_recorded(labs: list[dict], registry: Path = REGISTRY, out: Callable[[str], None] = print,
                  timeout: float = 60.0) -> int:
    """`provisiond lab down`: stop `labs` (records of running labs, see select_labs), then
    remove what killed labs left (their records, children and namespaces; a running lab that
    was not chosen is never touched). Returns how many labs were stopped."""
    for record in labs:
        _stop_lab(record, registry, out, timeout)
    for record_path in sorted(registry.glob("*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if not _alive(record.get("pid")):  # a killed lab: nothing of it may stay
            _stop_lab(record, registry, out, timeout)
    for leftover in lab_network.sweep():
        out(f"removed {leftover}")
    return len(labs)
