"""The native lock-step sender (lockstep.c), loaded with ctypes.

hatch_build.py compiles lockstep.c into _lockstep.so beside this file when the project is
installed (`pip install`, editable or not). ctypes releases the GIL for the whole call, so a
transfer thread blocked in it costs the Python server nothing. If the library is missing (no
C compiler at install time), `load()` returns None and the server runs lock-step transfers in
its Python event loop instead: same protocol, lower throughput.
"""

from __future__ import annotations

import ctypes
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).with_name("_lockstep.so")
SOURCE = Path(__file__).with_name("lockstep.c")

# enum ls_outcome in lockstep.c
OK, TIMEOUT, CLIENT_ERROR, OS_ERROR, STOPPED = range(5)


class _Result(ctypes.Structure):
    _fields_ = [
        ("acked", ctypes.c_int64),
        ("retransmits", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("client_code", ctypes.c_int32),
        ("client_message", ctypes.c_char * 256),
    ]


@dataclass(frozen=True)
class Finished:
    """How a native transfer ended: `outcome` is one of the constants above."""

    outcome: int
    acked: int
    retransmits: int
    error: int
    client_code: int
    client_message: str


class StopFlag:
    """Set from another thread to end a running transfer (with a shutdown of its socket)."""

    def __init__(self) -> None:
        self.value = ctypes.c_int32(0)

    def set(self) -> None:
        self.value.value = 1


_library: ctypes.CDLL | None = None
_tried = False


def load() -> ctypes.CDLL | None:
    """The compiled sender, or None (logged once) if it was not built."""
    global _library, _tried
    if _tried:
        return _library
    _tried = True
    try:
        library = ctypes.CDLL(str(LIBRARY))
    except OSError as exc:
        log.warning("TFTP: native lock-step sender not available (%s); lock-step transfers "
                    "run in the Python loop, slower. Reinstall with a C compiler "
                    "(apt install gcc; pip install -e .) to build it.", exc)
        return None
    run = library.ls_run
    run.restype = ctypes.c_int
    run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int64, ctypes.c_int32,
                    ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                    ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(_Result)]
    _library = library
    return library


def run_lockstep(library: ctypes.CDLL, sock: socket.socket, fd: int | None,
                 content: bytes | None, size: int, blksize: int, oack: bytes, timeout: float,
                 retries: int, stop: StopFlag) -> Finished:
    """Run one lock-step transfer to its end on a blocking, connected socket (blocks; the
    GIL is released meanwhile). Content is `content` if given, else the file `fd`."""
    result = _Result()
    outcome = library.ls_run(sock.fileno(), -1 if fd is None else fd, content, size, blksize,
                             oack, len(oack), max(1, round(timeout * 1000)), retries,
                             ctypes.byref(stop.value), ctypes.byref(result))
    return Finished(outcome, result.acked, result.retransmits, result.error,
                    result.client_code, result.client_message.decode("utf-8", "replace"))
