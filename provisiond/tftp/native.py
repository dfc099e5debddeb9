"""The native TFTP sender (sender.c), loaded with ctypes.

hatch_build.py compiles sender.c into _sender.so beside this file when the project is
installed (`pip install`, editable or not). ctypes releases the GIL for the whole call, so a
transfer thread blocked in it costs the Python server nothing. If the library is missing (no
C compiler at install time), `load()` returns None and the server runs transfers in its
Python event loop instead: same protocol, lower throughput.
"""

from __future__ import annotations

import ctypes
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).with_name("_sender.so")

# enum send_outcome in sender.c
OK, TIMEOUT, CLIENT_ERROR, OS_ERROR, STOPPED = range(5)


class _Result(ctypes.Structure):
    _fields_ = [
        ("acked", ctypes.c_int64),
        ("retransmits", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("client_code", ctypes.c_int32),
        ("gso_refused", ctypes.c_int32),
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
    gso_refused: int  # errno of a refused UDP GSO send (0: none); blocks then went one by one


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
        log.warning("TFTP: native sender not available (%s); transfers run in the Python "
                    "loop, slower. Reinstall with a C compiler (apt install gcc; "
                    "pip install -e .) to build it.", exc)
        return None
    run = library.tftp_send
    run.restype = ctypes.c_int
    run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int64, ctypes.c_int32,
                    ctypes.c_int32, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int32,
                    ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32),
                    ctypes.POINTER(_Result)]
    _library = library
    return library


@dataclass(frozen=True)
class Plan:
    """What the Python server decided for one transfer; the sender only carries it out."""

    fd: int | None  # the file, if `content` is None
    content: bytes | None  # generated or netascii content
    size: int
    blksize: int
    windowsize: int
    gso_batch: int  # blocks per sendmsg() with UDP GSO (1: none)
    oack: bytes  # sent first if not empty; ACK 0 starts the data
    timeout: float
    retries: int


def send(library: ctypes.CDLL, sock: socket.socket, plan: Plan, stop: StopFlag) -> Finished:
    """Run one transfer to its end on a blocking, connected socket. Blocks; the GIL is
    released meanwhile."""
    result = _Result()
    outcome = library.tftp_send(
        sock.fileno(), -1 if plan.fd is None else plan.fd, plan.content, plan.size,
        plan.blksize, plan.windowsize, plan.gso_batch, plan.oack, len(plan.oack),
        max(1, round(plan.timeout * 1000)), plan.retries, ctypes.byref(stop.value),
        ctypes.byref(result))
    return Finished(outcome, result.acked, result.retransmits, result.error,
                    result.client_code, result.client_message.decode("utf-8", "replace"),
                    result.gso_refused)
