"""A Debian 12 container booted with its own systemd, for the real OpenStack controller test.

The root is built in cached layers under /var/cache/provisiond/openstack, each keyed by the
content of what made it, so a rerun skips what it already has:

  base-<key>/   debootstrap minbase of bookworm with systemd, python3-requests, lvm2 (~80 s)
  debs-<key>/   an overlay upper dir over base: apt lists plus the .debs a package list needs,
                downloaded on the host side with network access (seconds)

A run stacks both under an overlay of its own (the container's writes go to the run's
directory), boots it with `systemd-nspawn -b --register=no --keep-unit` in a network namespace
the test made (a veth to provisiond's namespace, no uplink: the install inside runs without
network, from the downloaded .debs), and drives it with `nsenter -t <container PID 1> -a`.
Stopping removes everything it made, including nspawn's leftovers in /run/systemd/nspawn.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("PROVISIOND_CACHE", "/var/cache/provisiond")) / "openstack"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "python3", "python3-requests",
                 "lvm2", "ca-certificates", "procps", "curl")
# LVM in a container: no udev inside (systemd-udevd needs a writable /sys), so LVM must make
# its own device nodes and never wait for udev.
LVM_NO_UDEV = "activation { udev_sync = 0 udev_rules = 0 }\ndevices { obtain_device_list_from_udev = 0 }\n"


def run(*args: str, timeout: float = 60, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def content_key(*parts: object) -> str:
    """A short hash of what makes a cached layer; a change in any part makes a new layer."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder per layer at a time (parallel test runs wait instead of building twice)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _unmount_below(path: Path) -> None:
    """Unmount whatever a killed build left mounted below `path` (debootstrap mounts /proc)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == str(path) or m.startswith(f"{path}/")), reverse=True):
        run("umount", "-l", mount, check=False)


def _remove_tree(path: Path) -> None:
    _unmount_below(path)
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Timings:
    """Wall-clock seconds of each phase, in order, for the test's report (never asserted)."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - start, 1)

    def report(self) -> str:
        return "\n".join(f"  {name:<40} {seconds:7.1f} s" for name, seconds in self.phases.items())


def base_root(packages: Sequence[str] = BASE_PACKAGES) -> Path:
    """The debootstrapped root (cached): minbase of bookworm with `packages`."""
    key = content_key("base", SUITE, MIRROR, sorted(packages))
    target = CACHE / f"base-{key}"
    with _locked(f"base-{key}"):
        if target.is_dir():
            return target
        building = CACHE / f"building-base-{key}"
        _remove_tree(building)
        try:
            run("debootstrap", "--variant=minbase", f"--include={','.join(sorted(packages))}",
                SUITE, str(building), MIRROR, timeout=900)
        finally:
            _unmount_below(building)
        (building / "etc/lvm/lvmlocal.conf").write_text(LVM_NO_UDEV)
        building.rename(target)
    return target


@contextlib.contextmanager
def overlay(lowers: Sequence[Path], upper: Path, work: Path, merged: Path) -> Iterator[Path]:
    """`merged` shows `upper` over `lowers` (first lower on top); unmounted on exit."""
    for directory in (upper, work, merged):
        directory.mkdir(parents=True, exist_ok=True)
    lowerdir = ":".join(str(path) for path in lowers)
    run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir},upperdir={upper},workdir={work}",
        str(merged))
    try:
        yield merged
    finally:
        _unmount_below(merged)


def package_layer(base: Path, packages: Sequence[str], apt_options: Sequence[str] = ()) -> Path:
    """An overlay layer over `base` with fresh apt lists and every .deb that installing
    `packages` (with `apt_options`, as the agent will) needs; downloaded here, with network."""
    key = content_key("debs", base.name, sorted(packages), list(apt_options))
    target = CACHE / f"debs-{key}"
    with _locked(f"debs-{key}"):
        if target.is_dir():
            return target
        building = CACHE / f"building-debs-{key}"
        _remove_tree(building)
        with overlay([base], building / "upper", building / "work", building / "merged") as root:
            run("chroot", str(root), "apt-get", "update", "-qq", timeout=300)
            run("chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                "--download-only", *apt_options, *packages, timeout=1200)
        (building / "upper").rename(target)
        _remove_tree(building)
    return target


def _container_init(nspawn_pid: int) -> int | None:
    """PID (host view) of the container's PID 1: the descendant of nspawn whose innermost PID is 1."""
    children = {nspawn_pid}
    for _ in range(3):
        for pid in list(children):
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                children.update(int(kid) for kid in kids)
    for pid in children - {nspawn_pid}:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[1:] and line.split()[-1] == "1" and len(line.split()) > 2:
                    return pid
    return None


@dataclass
class Container:
    """One booted container; `run` executes a command inside it (all its namespaces)."""

    name: str
    root: Path
    netns: str
    log_path: Path
    hostname: str = ""
    # Root on a real node has CAP_NET_ADMIN (nftables, neutron); nspawn drops it unless asked.
    capabilities: tuple[str, ...] = ("CAP_NET_ADMIN",)
    process: subprocess.Popen[bytes] | None = None
    init_pid: int = 0

    def boot(self, timeout: float = 120, binds: Sequence[str] = ()) -> str:
        """Boot; wait until systemd says running/degraded; return that state."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
                 f"--machine={self.name}", f"--hostname={self.hostname or self.name}",
                 f"--network-namespace-path=/run/netns/{self.netns}",
                 *(f"--capability={cap}" for cap in self.capabilities), *(f"--bind={bind}" for bind in binds)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_power_off_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.process.returncode}:\n{self.log()}")
            pid = _container_init(self.process.pid)
            if pid:
                self.init_pid = pid
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"no container init within {timeout} s:\n{self.log()}")
        state = ""
        while time.monotonic() < deadline:
            # Early on, systemctl cannot reach systemd yet (empty answer): ask again.
            state = self.run("systemctl", "is-system-running", check=False, timeout=30).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"container {self.name} did not boot within {timeout} s "
                               f"(systemd says {state!r}):\n{self.log()}")
        return state

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.init_pid, "container not booted"
        return run("nsenter", "-t", str(self.init_pid), "-a", "--", *args, timeout=timeout, check=check,
                   input=input)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> None:
        """Power off (nspawn turns SIGTERM into a clean shutdown inside); SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        _remove_nspawn_leftovers(self.name)


PR_SET_PDEATHSIG = 1


def _power_off_with_parent() -> None:
    """In the forked nspawn: SIGTERM (a clean power-off) when the test process dies, even by
    SIGKILL or a `timeout`, so a killed run leaves no container, namespace or loop device busy."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _remove_nspawn_leftovers(machine: str) -> None:
    """nspawn leaves /run/systemd/nspawn/propagate/<machine> (and empty dirs) behind."""
    base = Path("/run/systemd/nspawn")
    for path in (base / "propagate" / machine, base / "unix-export" / machine):
        _remove_tree(path)
    for directory in (base / "propagate", base / "unix-export", base / "locks", base):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty: another run's container may still be up


@dataclass
class LoopDevice:
    """A sparse file behind a loop device, for a VG (`nova-volumes`) inside the container."""

    image: Path
    size: str = "2G"
    device: str = ""

    def attach(self) -> str:
        run("truncate", "-s", self.size, str(self.image))
        self.device = run("losetup", "--find", "--show", str(self.image)).stdout.strip()
        return self.device

    def detach(self) -> None:
        if self.device:
            run("losetup", "-d", self.device, check=False)
            self.device = ""
        self.image.unlink(missing_ok=True)

    @property
    def minor(self) -> int:
        return os.minor(os.stat(self.device).st_rdev)


def make_volume_group(container: Container, loop: LoopDevice, name: str) -> None:
    """What the installer did on a real controller: a PV on the disk and VG `name` on it. The
    container's /dev has no loop nodes: make this one, then pvcreate/vgcreate."""
    node = f"/dev/{Path(loop.device).name}"
    container.run("sh", "-c", f"[ -b {node} ] || mknod {node} b 7 {loop.minor}")
    container.run("pvcreate", "-q", node)
    container.run("vgcreate", "-q", name, node)


@contextlib.contextmanager
def booted(name: str, lowers: Sequence[Path], workdir: Path, netns: str, timings: Timings,
           binds: Sequence[str] = (), hostname: str = "", files: dict[str, str] | None = None) -> Iterator[Container]:
    """A booted container over `lowers` with its writes in `workdir`; removed on exit. `files`
    (path -> content) are written into the root before it boots (what an installer leaves,
    e.g. /etc/hostname and /etc/hosts)."""
    container = Container(name, workdir / "root", netns, workdir / "nspawn.log", hostname)
    try:
        with overlay(lowers, workdir / "upper", workdir / "work", workdir / "root") as root:
            for path, content in (files or {}).items():
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            try:
                with timings.phase("container boot"):
                    container.boot(binds=binds)
                yield container
            finally:
                with timings.phase("container stop"):
                    container.stop()
    finally:
        with timings.phase("container removal (its writes)"):
            _remove_tree(workdir / "upper")
            _remove_tree(workdir / "work")
            _remove_tree(workdir / "root")
