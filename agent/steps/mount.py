"""mount: one /etc/fstab line for the mount point, and the file system mounted there."""

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
    if "remount" in actions:
        system.run(["umount", path], timeout=step["timeout"], check=True, what=f"umount {path}")
    if "mount" in actions or "remount" in actions:
        system.run(["mount", path], timeout=step["timeout"], check=True, what=f"mount {path}")
        if mounted_source(path) is None:
            raise StepFailed(f"mount {path} succeeded but nothing is mounted there")
    if step["check_writable"]:
        check_writable(path)
    if not actions:
        return Outcome(False, f"{path} is mounted as wanted" + (" and writable" if step["check_writable"] else ""))
    return Outcome(True, f"{', '.join(actions)}: {step['src']} on {path}")
