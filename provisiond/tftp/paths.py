"""Confining requested file names to the TFTP root.

A name is normalised first (backslashes as used by Windows-style loaders become slashes, empty
and "." components vanish); anything that could reach outside the root is refused before a
file is touched: "..", NUL and control characters, over-long names. Opening then resolves
symlinks and refuses a target outside the root or anything but a regular file, and checks the
opened descriptor again so a symlink swapped in between cannot redirect the read.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255


class PathRefused(Exception):
    """The request tries to leave the root or is not a servable file (TFTP access violation)."""


@dataclass(frozen=True)
class RequestPath:
    """A normalised relative path; `absolute` records that the client sent a leading '/'."""

    relative: str
    absolute: bool


def normalize(name: str) -> RequestPath:
    """Check and normalise a client's filename; raises PathRefused with the reason."""
    if "\0" in name:
        raise PathRefused("NUL byte in filename")
    if len(name.encode("utf-8")) > MAX_PATH_BYTES:
        raise PathRefused(f"filename longer than {MAX_PATH_BYTES} bytes")
    if not name.isprintable():
        raise PathRefused("control character in filename")
    name = name.replace("\\", "/")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathRefused("'..' in filename")
    if any(len(part.encode("utf-8")) > MAX_COMPONENT_BYTES for part in parts):
        raise PathRefused(f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    if not parts:
        raise PathRefused("empty filename")
    return RequestPath("/".join(parts), name.startswith("/"))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_in_root(root: Path, relative: str) -> tuple[int, int]:
    """Open root/relative read-only; returns (fd, size). FileNotFoundError if absent."""
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, relative))
    if not _inside(real, root_real):
        raise PathRefused("resolves (through a symlink) outside the TFTP root")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except NotADirectoryError:
        raise FileNotFoundError(relative) from None
    except PermissionError:
        raise PathRefused("file is not readable by the server") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathRefused("symlink changed while opening") from None
        raise
    return _regular_file(fd, root_real)


def open_named(path: Path) -> tuple[int, int]:
    """Open a file the responder named (a boot loader from a Debian package, say): it lies
    outside the root by design, so only "a readable regular file" is checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(str(path)) from None
    except PermissionError:
        raise PathRefused(f"{path} is not readable by the server") from None
    return _regular_file(fd, None)


def _regular_file(fd: int, root_real: str | None) -> tuple[int, int]:
    """(fd, size) if fd is a regular file (inside root_real, if given); else closes it."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PathRefused("not a regular file")
        if root_real is not None and not _inside(os.readlink(f"/proc/self/fd/{fd}"), root_real):
            raise PathRefused("opened file lies outside the TFTP root")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size
