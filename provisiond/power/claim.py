"""Exclusive use of one BMC: a lock across the threads of a process and a file lock across
processes (a fan-out, `provisiond serve` and an operator's command may meet on one BMC).

A driver claims its BMC at its first call and keeps it until it is closed, so a sequence such
as "set one-time PXE, then power on" is not interleaved with another provisiond's commands.
The kernel drops the file lock when the process ends, so a crash leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
import tempfile
import threading
import time
from pathlib import Path

from provisiond.power.base import ErrorKind, PowerError

logger = logging.getLogger(__name__)

_thread_locks: dict[tuple[str, int], threading.Lock] = {}
_thread_locks_guard = threading.Lock()
_warned = False


def thread_lock(key: tuple[str, int]) -> threading.Lock:
    """The in-process lock of a BMC (address, port)."""
    with _thread_locks_guard:
        return _thread_locks.setdefault(key, threading.Lock())


def claimed() -> list[tuple[str, int]]:
    """The BMCs this process holds a claim on now (the tests check that none is left behind)."""
    with _thread_locks_guard:
        return [key for key, lock in _thread_locks.items() if lock.locked()]


def default_lock_dir() -> Path:
    """Where the per-BMC lock files live: a private runtime directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "provisiond" / "bmc-locks"
    if os.geteuid() == 0:
        return Path("/run/provisiond/bmc-locks")
    return Path(tempfile.gettempdir()) / f"provisiond-{os.geteuid()}" / "bmc-locks"


def lock_file(key: tuple[str, int], directory: Path | None = None) -> Path:
    address, port = key
    name = re.sub(r"[^A-Za-z0-9.-]", "_", address)
    return (directory or default_lock_dir()) / f"{name}_{port}.lock"


def _open_lock_file(path: Path) -> int | None:
    """Open (create) the lock file in a directory only we can write; None if impossible."""
    global _warned
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path.parent)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise PermissionError(f"{path.parent} is not a private directory of this user")
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if not _warned:
            _warned = True
            logger.warning(
                "BMC lock files unavailable (%s): only this process's operations are serialised",
                exc,
            )
        return None


class BmcClaim:
    """Hold one BMC exclusively; acquire() raises PowerError(BUSY) when it stays taken."""

    def __init__(self, key: tuple[str, int], where: str, directory: Path | None = None) -> None:
        self.key = key
        self.where = where
        self.path = lock_file(key, directory)
        self.held = False
        self._fd: int | None = None

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        lock = thread_lock(self.key)
        if not lock.acquire(timeout=max(0.0, timeout)):
            raise PowerError(
                ErrorKind.BUSY, f"{self.where}: an earlier operation on this BMC is still running"
            )
        try:
            fd = _open_lock_file(self.path)
            while fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise PowerError(
                            ErrorKind.BUSY,
                            f"{self.where}: another provisiond process is working on this BMC",
                        ) from None
                    time.sleep(0.05)
        except BaseException:
            lock.release()
            raise
        self._fd = fd
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._fd is not None:
            os.close(self._fd)  # drops the file lock
            self._fd = None
        thread_lock(self.key).release()
