"""IPMI 2.0 (RMCP+) power driver over pyghmi, with a deadline on every call.

pyghmi's synchronous calls can block far longer than asked (one I/O thread per process, a
dead BMC gives up after 4-6 s with an empty error, many dead BMCs stall each other). So each
call runs in a daemon thread and the caller waits at most `timeout` seconds; a call that
overruns is abandoned (its thread keeps the BMC's slot until pyghmi returns) and reported.
Fan-outs run drivers in worker processes (provisiond.power.fanout), so an abandoned thread
dies with its process.

Before its first login the driver probes the BMC on its own UDP socket (Get Channel
Authentication Capabilities, no session): a BMC that does not answer never enters pyghmi,
where dead BMCs stall the logins of live ones in the same process. pyghmi_fixes removes a
race in pyghmi's I/O thread that could freeze a whole process (applied when a driver is made).

Commands are the standard IPMI ones sent with `Command.xraw_command` (chassis status, chassis
control, boot flags): this keeps the completion code of a refusal (0xC0 "busy" is retried,
0xD5 "not in present state" is not) and skips pyghmi's OEM probing round trip.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import pyghmi.exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmi_session

from provisiond.power import pyghmi_fixes
from provisiond.power.base import BmcTarget, ErrorKind, PowerDriver, PowerError
from provisiond.power.claim import BmcClaim
from provisiond.power.ipmi_spec import (
    BOOT_DEVICES,
    CC_NODE_BUSY,
    CC_NOT_IN_PRESENT_STATE,
    CC_TIMEOUT,
    CMD_CHASSIS_CONTROL,
    CMD_CHASSIS_STATUS,
    CMD_SET_BOOT_OPTIONS,
    CONTROL,
    NETFN_CHASSIS,
)
from provisiond.power.rmcp import ProbeError, auth_cap_request, check_auth_cap_response

T = TypeVar("T")

# Completion codes that mean "try again shortly".
BUSY_CODES = {CC_NODE_BUSY: "node busy", CC_TIMEOUT: "timeout while processing the command"}
NOT_NOW = CC_NOT_IN_PRESENT_STATE

_AUTH_HINTS = (
    "incorrect password",
    "unauthorized name",
    "rakp4 integrity",
    "unauthorized role",
    "invalid role",
    "invalid username length",
    "password for",
)
_CIPHER_HINTS = (
    "authentication algorithm",
    "integrity algorithm",
    "integrity payload",
    "confidentiality algorithm",
    "cipher suite",
)
_BUSY_HINTS = ("insufficient resources",)


def classify(exc: BaseException, target: BmcTarget, during_login: bool) -> PowerError:
    """Turn what pyghmi raised into an ErrorKind and a message naming the BMC and the cause."""
    if isinstance(exc, PowerError):
        return exc
    text = str(exc.args[0]) if exc.args and exc.args[0] else ""
    lowered = text.lower()
    code = getattr(exc, "ipmicode", 0) or 0
    where = target.where
    if any(hint in lowered for hint in _AUTH_HINTS):
        return PowerError(
            ErrorKind.AUTH, f"{where} rejected user {target.username!r} or its password ({text})"
        )
    if any(hint in lowered for hint in _CIPHER_HINTS):
        return PowerError(
            ErrorKind.CIPHER,
            f"{where} accepts none of the cipher suites offered (17, 3): {text}; "
            "enable cipher suite 3 or 17 on the BMC",
        )
    if code in BUSY_CODES or any(hint in lowered for hint in _BUSY_HINTS):
        return PowerError(ErrorKind.BUSY, f"{where}: {BUSY_CODES.get(code, text)}")
    if code == NOT_NOW:
        return PowerError(ErrorKind.REFUSED, f"{where}: not possible in the present power state")
    if not text or lowered in ("timeout", "session failed to initialize"):
        if during_login:
            return PowerError(
                ErrorKind.UNREACHABLE,
                f"no IPMI answer from {where} (check the address, port, network and that "
                "IPMI over LAN is enabled)",
            )
        return PowerError(ErrorKind.TIMEOUT, f"{where} stopped answering")
    if isinstance(exc, pyghmi_exc.IpmiException) and code:
        return PowerError(ErrorKind.REFUSED, f"{where}: {text} (completion code {code:#04x})")
    if isinstance(exc, OSError):
        return PowerError(ErrorKind.UNREACHABLE, f"{where}: {exc.strerror or exc}")
    return PowerError(ErrorKind.PROTOCOL, f"{where}: {type(exc).__name__}: {text}")


def probe(target: BmcTarget, timeout: float) -> None:
    """Check that the BMC answers IPMI 2.0 at all, on our own socket, within `timeout`.

    Sends Get Channel Authentication Capabilities (resent at 0.25, 0.5, 1 s, ...). Raises
    PowerError(UNREACHABLE) if nothing answers, PROTOCOL if the answer lacks IPMI 2.0.
    """
    where = target.where
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            target.address, target.port, type=socket.SOCK_DGRAM
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise PowerError(
            ErrorKind.UNREACHABLE, f"cannot resolve BMC address {target.address!r}: {exc}"
        ) from None
    sequence = random.randrange(64)
    request = auth_cap_request(sequence)
    deadline = time.monotonic() + timeout
    pause = 0.25

    def answered(answer: bytes) -> bool:
        try:
            if check_auth_cap_response(answer, sequence):
                return True
        except ProbeError:
            return False  # a stray packet; keep waiting
        raise PowerError(
            ErrorKind.PROTOCOL,
            f"{where} answers IPMI but not IPMI 2.0 / RMCP+; enable IPMI 2.0 on the BMC",
        )

    with socket.socket(family, kind, proto) as sock:
        try:
            sock.connect(sockaddr)  # connected: an ICMP "port unreachable" surfaces as an error
            while (now := time.monotonic()) < deadline:
                sock.send(request)
                resend = min(deadline, now + pause)
                pause *= 2
                while (now := time.monotonic()) < resend:
                    sock.settimeout(resend - now)
                    try:
                        if answered(sock.recv(512)):
                            return
                    except TimeoutError:
                        break
            # A thread that got no CPU until after the deadline may find an answer that came
            # in time waiting in the socket: read what is there before giving up.
            sock.setblocking(False)
            while True:
                try:
                    if answered(sock.recv(512)):
                        return
                except BlockingIOError:
                    break
        except ConnectionRefusedError:
            raise PowerError(
                ErrorKind.UNREACHABLE,
                f"{where} refused the connection (nothing listens on UDP {target.port})",
            ) from None
        except OSError as exc:
            raise PowerError(ErrorKind.UNREACHABLE, f"{where}: {exc.strerror or exc}") from None
    raise PowerError(
        ErrorKind.UNREACHABLE,
        f"no IPMI answer from {where} within {round(timeout, 1):g} s (check the address, port, network "
        "and that IPMI over LAN is enabled)",
    )


class IpmiDriver(PowerDriver):
    """Power control of one node through its BMC, every call bounded and retried if transient.

    `timeout` bounds each attempt (login included); BMC-busy answers are retried up to
    `retries` times with exponential backoff starting at `backoff` seconds.
    """

    def __init__(
        self,
        target: BmcTarget,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        pyghmi_fixes.apply()  # before pyghmi's I/O thread serves this driver's sessions
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.attempts = 0
        self._command: ipmi_command.Command | None = None
        # The BMC is claimed at the first call and released by close() once no call of
        # ours is still running in pyghmi (an abandoned call keeps it until it returns).
        self._claim = BmcClaim(target.key, target.where)
        # A driver dropped without close() gives its claim back when it is collected (a call
        # of it still running in pyghmi keeps it alive, so that is never too early): otherwise
        # a caller that forgot close() would keep the BMC "busy" for the life of the process.
        weakref.finalize(self, self._claim.release)
        self._state = threading.Lock()
        self._running = 0
        self._closed = False

    # -- the PowerDriver interface ---------------------------------------------------------

    def status(self) -> str:
        response = self._call("status", lambda c: c.xraw_command(NETFN_CHASSIS, CMD_CHASSIS_STATUS))
        data = response["data"]
        if not data:
            raise PowerError(ErrorKind.PROTOCOL, f"{self.target.where}: empty chassis status")
        return "on" if data[0] & 1 else "off"

    def on(self) -> None:
        self._control("on")

    def off(self) -> None:
        self._control("off")

    def soft(self) -> None:
        self._control("soft")

    def cycle(self) -> None:
        self._control("cycle")

    def reset(self) -> None:
        self._control("reset")

    def set_boot_device(self, device: str, persist: bool = False, uefi: bool = False) -> None:
        if device not in BOOT_DEVICES:
            raise ValueError(f"unknown boot device {device!r}; one of {', '.join(BOOT_DEVICES)}")
        flags = 0x80 | (0x40 if persist else 0) | (0x20 if uefi else 0)
        selector = BOOT_DEVICES[device] << 2
        if device == "default":
            flags = selector = 0

        def set_flags(c: ipmi_command.Command) -> None:
            # As pyghmi's set_bootdev: stop the 60 s boot-flag expiry timer, then set the flags.
            c.xraw_command(NETFN_CHASSIS, CMD_SET_BOOT_OPTIONS, data=(3, 8))
            c.xraw_command(NETFN_CHASSIS, CMD_SET_BOOT_OPTIONS, data=(5, flags, selector, 0, 0, 0))

        self._call(f"set boot device {device}", set_flags)

    def close(self) -> None:
        """Log out (bounded) so the BMC's few session slots are not held until they expire,
        then give up the claim on the BMC."""
        command, self._command = self._command, None
        if command is not None:
            self._started()
            logout = threading.Thread(
                target=self._finishing(command.ipmi_session.logout), daemon=True
            )
            logout.start()
            logout.join(min(self.timeout, 2.0))
        with self._state:
            self._closed = True
            if self._running == 0:
                self._claim.release()

    # -- machinery -------------------------------------------------------------------------

    def _control(self, directive: str) -> None:
        self._call(
            f"power {directive}",
            lambda c: c.xraw_command(
                NETFN_CHASSIS, CMD_CHASSIS_CONTROL, data=(CONTROL[directive],)
            ),
        )

    def _call(self, what: str, fn: Callable[[ipmi_command.Command], T]) -> T:
        """Run fn with retries for transient errors; each attempt bounded by self.timeout."""
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(what, fn)
            except PowerError as exc:
                if not exc.kind.transient or attempt == self.retries:
                    raise
                time.sleep(self.backoff * (2**attempt))
        raise AssertionError("unreachable: the loop returns or raises")

    def _login(self) -> ipmi_command.Command:
        t = self.target
        try:
            return ipmi_command.Command(
                bmc=t.address, userid=t.username, password=t.password, port=t.port
            )
        finally:
            # pyghmi files a session being set up under str credentials and removes it under
            # bytes, so it never leaves: a later login with the same credentials would get
            # the stale (possibly failed) session back without an error.
            ipmi_session.Session.initting_sessions.pop(
                (t.address, t.username, t.password, t.port, None), None
            )

    def _started(self) -> None:
        with self._state:
            self._running += 1

    def _finishing(self, fn: Callable[[], None]) -> Callable[[], None]:
        """fn, then release the claim if close() came while it ran."""

        def run() -> None:
            try:
                fn()
            finally:
                with self._state:
                    self._running -= 1
                    if self._closed and self._running == 0:
                        self._claim.release()

        return run

    def _attempt(self, what: str, fn: Callable[[ipmi_command.Command], T]) -> T:
        self.attempts += 1
        deadline = time.monotonic() + self.timeout
        if not self._claim.held:
            self._claim.acquire(self.timeout)  # raises PowerError(BUSY)
            self._closed = False
        box: dict[str, Any] = {"login": self._command is None}
        if box["login"]:
            # Only a BMC that answers goes to pyghmi: dead BMCs in pyghmi's shared I/O loop
            # stall the logins of live ones in the same process (measured: bench/ipmi).
            probe(self.target, max(0.0, deadline - time.monotonic()))

        def work() -> None:
            try:
                if self._command is None:
                    self._command = self._login()
                box["login"] = False
                box["value"] = fn(self._command)
            except BaseException as exc:  # reported to the caller below
                box["error"] = exc

        self._started()
        thread = threading.Thread(
            target=self._finishing(work), name=f"ipmi {self.target.name}", daemon=True
        )
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._command = None  # abandoned mid-call: never reuse that session
            if box["login"]:
                raise PowerError(
                    ErrorKind.UNREACHABLE,
                    f"no IPMI answer from {self.target.where} within {self.timeout:g} s "
                    "(check the address, port, network and that IPMI over LAN is enabled)",
                )
            raise PowerError(
                ErrorKind.TIMEOUT,
                f"{what}: no answer from {self.target.where} within {self.timeout:g} s",
            )
        if "error" in box:
            error = classify(box["error"], self.target, box["login"])
            if box["login"] or error.kind in (ErrorKind.TIMEOUT, ErrorKind.PROTOCOL):
                self._command = None
            raise error
        return box["value"]
