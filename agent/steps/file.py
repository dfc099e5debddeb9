"""file: a file with this content, mode and owner, or a directory; written atomically."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import tempfile
from typing import Any

from agent.steps import Outcome, StepFailed


def ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """(uid, gid) to set; -1 leaves one alone. An unknown name fails with its name."""
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
    except KeyError:
        raise StepFailed(f"no user {owner!r} on this node (install the package that makes it first)") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise StepFailed(f"no group {group!r} on this node (install the package that makes it first)") from None
    return uid, gid


def attribute_changes(path: str, mode: str | None, uid: int, gid: int) -> list[str]:
    info = os.stat(path)
    changes = []
    if mode is not None and stat.S_IMODE(info.st_mode) != int(mode, 8):
        changes.append(f"mode {oct(stat.S_IMODE(info.st_mode))[2:].zfill(4)} -> {mode}")
    if uid != -1 and info.st_uid != uid:
        changes.append(f"owner uid {info.st_uid} -> {uid}")
    if gid != -1 and info.st_gid != gid:
        changes.append(f"group gid {info.st_gid} -> {gid}")
    return changes


def write_atomically(path: str, content: bytes, mode: str | None, uid: int, gid: int) -> None:
    """Write beside the target, then rename: a reader never sees half a file (a target that is
    a mount point of its own cannot be renamed over: it is rewritten in place)."""
    directory = os.path.dirname(path) or "/"
    os.makedirs(directory, exist_ok=True)
    existing_mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0o644
    if os.path.exists(path):  # a rewrite keeps the owner and group (packaged configs are root:nova 0640)
        info = os.stat(path)
        uid = info.st_uid if uid == -1 else uid
        gid = info.st_gid if gid == -1 else gid
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".provisiond-agent.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, int(mode, 8) if mode is not None else existing_mode)
        if uid != -1 or gid != -1:
            os.chown(temporary, uid, gid)
        try:
            os.replace(temporary, path)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # The target is a mount point (a bind-mounted file, as in containers): write in place.
            with open(path, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.unlink(temporary)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    path = step["path"]
    uid, gid = ids(step.get("owner"), step.get("group"))
    mode = step.get("mode")
    if step["state"] == "directory":
        if os.path.exists(path) and not os.path.isdir(path):
            raise StepFailed(f"{path} exists and is not a directory")
        if not os.path.isdir(path):
            if ctx.dry_run:
                return Outcome(True, f"would create directory {path}")
            os.makedirs(path, mode=int(mode, 8) if mode else 0o755)
            changes = ["created"]
        else:
            changes = []
        changes += attribute_changes(path, mode, uid, gid)
        if changes and ctx.dry_run:
            return Outcome(True, f"would change {path}: {', '.join(changes)}")
        if mode is not None:
            os.chmod(path, int(mode, 8))
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
        return Outcome(bool(changes), f"{path}: {', '.join(changes)}" if changes else f"{path} is as wanted")

    content = step["content"].encode()
    if os.path.isdir(path):
        raise StepFailed(f"{path} is a directory, not a file")
    changes = []
    if not os.path.exists(path):
        changes.append("created")
    else:
        with open(path, "rb") as handle:
            if handle.read() != content:
                changes.append("content")
        changes += attribute_changes(path, mode, uid, gid)
    if not changes:
        return Outcome(False, f"{path} is as wanted")
    if ctx.dry_run:
        return Outcome(True, f"would change {path}: {', '.join(changes)}")
    write_atomically(path, content, mode, uid, gid)
    ctx.journal.mark_changed(path)
    return Outcome(True, f"{path}: {', '.join(changes)}")
