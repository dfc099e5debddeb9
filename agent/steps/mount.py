"""mount: one /etc/fstab line for the mount point, and the file system mounted there.

Where systemd is init of the agent's mount namespace (a booted node), the mount is made by
systemd from that fstab line (`systemctl start <path>.mount`), as at boot, and never by the
agent's own `mount`: a FUSE file system's daemon (glusterfs) stays in the cgroup of whoever ran
`mount`, and systemd kills what is left in the agent service's cgroup when the agent exits, so
the volume would vanish (or, with nothing mounted there any more, the instances would silently
land on the local disk) the moment the node is ready. In a mount namespace of its own (tests,
a chroot) the agent runs `mount` itself.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from agent import system
from agent.steps import Outcome, StepFailed
from agent.steps.file import write_atomically

FSTAB = "/etc/fstab"


def fstab_line(step: dict[str, Any]) -> str:
    return f"{step['src']} {step['path']} {step['fstype']} {step['options']} 0 0"


def with_line(text: str, mount_point: str, line: str) -> str:
    """fstab text with exactly one entry for mount_point: `line` (in place of the first one)."""
    out: list[str] = []
    placed = False
    for existing in text.splitlines():
        fields = existing.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 and fields[1] == mount_point:
            if not placed:
                out.append(line)
                placed = True
            continue
        out.append(existing)
    if not placed:
        out.append(line)
    return "\n".join(out) + "\n"


def mounted_source(path: str) -> str | None:
    """What is mounted at path (None: nothing), from findmnt."""
    result = system.run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", path], timeout=30)
    return result.stdout.strip() or None if result.ok else None


def systemd_mounts_here() -> bool:
    """True when systemd is running and is init of this process's mount namespace."""
    if not os.path.isdir("/run/systemd/system"):
        return False
    try:
        return os.readlink("/proc/self/ns/mnt") == os.readlink("/proc/1/ns/mnt")
    except OSError:
        return False


def mount_unit(path: str, timeout: float) -> str:
    """The name systemd gives the mount unit of `path` (var-lib-nova-instances.mount)."""
    result = system.run(["systemd-escape", "--path", "--suffix=mount", path], timeout=timeout, check=True,
                        what=f"systemd-escape {path}")
    return result.stdout.strip()


def mount_by_systemd(path: str, remount: bool, timeout: float) -> None:
    """Make systemd (re)mount `path` from /etc/fstab: the mount and its daemon belong to the
    mount unit, which outlives the agent."""
    unit = mount_unit(path, timeout)
    system.run(["systemctl", "daemon-reload"], timeout=timeout, check=True, what="systemctl daemon-reload")
    result = system.run(["systemctl", "restart" if remount else "start", unit], timeout=timeout)
    if not result.ok:
        journal = system.run(["journalctl", "--no-pager", "-q", "-n", "15", "-u", unit], timeout=timeout)
        raise StepFailed(f"systemd could not mount {path} ({unit}): exit status {result.returncode}; "
                         f"its log follows", system.tail(journal.stdout or result.stderr))


def mount_directly(path: str, remount: bool, timeout: float) -> None:
    if remount:
        system.run(["umount", path], timeout=timeout, check=True, what=f"umount {path}")
    system.run(["mount", path], timeout=timeout, check=True, what=f"mount {path}")


def check_writable(path: str) -> None:
    probe = os.path.join(path, f".provisiond-agent-{uuid.uuid4().hex}")
    try:
        with open(probe, "w") as handle:
            handle.write("probe\n")
        os.unlink(probe)
    except OSError as exc:
        raise StepFailed(f"{path} is mounted but not writable: {exc.strerror}") from None


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    path = step["path"]
    old = ""
    if os.path.exists(FSTAB):
        with open(FSTAB) as handle:
            old = handle.read()
    new = with_line(old, path, fstab_line(step))
    actions = []
    if new != old:
        actions.append("fstab")
    source = mounted_source(path)
    if source is None:
        actions.append("mount")
    elif "fstab" in actions:
        actions.append("remount")
    if ctx.dry_run:
        if not actions:
            return Outcome(False, f"{path} is mounted as wanted")
        return Outcome(True, f"would update {', '.join(actions)} for {path}")
    if "fstab" in actions:
        write_atomically(FSTAB, new.encode(), None, -1, -1)
    os.makedirs(path, exist_ok=True)
    if "mount" in actions or "remount" in actions:
        mount = mount_by_systemd if systemd_mounts_here() else mount_directly
        mount(path, "remount" in actions, step["timeout"])
        if mounted_source(path) is None:
            raise StepFailed(f"mount {path} succeeded but nothing is mounted there")
    if step["check_writable"]:
        check_writable(path)
    if not actions:
        return Outcome(False, f"{path} is mounted as wanted" + (" and writable" if step["check_writable"] else ""))
    return Outcome(True, f"{', '.join(actions)}: {step['src']} on {path}")
