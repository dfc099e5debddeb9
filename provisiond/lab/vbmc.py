"""A virtual BMC that speaks real IPMI 2.0 (RMCP+) on a UDP port, for tests and the lab.

Built like OpenStack's virtualbmc: a thin subclass of `pyghmi.ipmi.bmc.Bmc` that maps chassis
power and boot-option commands to a machine backend. Backends are small on purpose (power
get/set, boot device get/set): the in-memory machine here serves tests and `provisiond vbmc`,
the lab adds one that drives a QEMU process.

pyghmi's BMC side has defects this module works around (see also _VbmcSession, and
provisiond.power.pyghmi_fixes for the I/O race that froze BMC processes under load):
- it accepts any cipher suite proposal, then answers with suite 3 (SHA-1) algorithms while
  pyghmi's own client proceeds with the SHA-256 it proposed and fails; here a proposal other
  than suite 3 is refused with "no cipher suite match", so the client falls back to suite 3
  and ipmitool (which asks Get Channel Cipher Suites first) picks suite 3 directly;
- an unknown user name got no answer at all (the client waited into a timeout); here it gets
  RAKP 2 with "unauthorized name", so clients report bad credentials at once.

Run on its own (one or more BMCs on consecutive ports, each with its own in-memory machine):
    python -m provisiond.lab.vbmc --port 16230 --username admin --password-file F
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as ipmi_constants
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmi_session

from provisiond.errors import UserError
from provisiond.lab.ipmi_proto import (
    RMCP_INVALID_NAME_LENGTH,
    RMCP_OK,
    RMCP_UNAUTHORIZED_NAME,
    BootDevice,
    ProtocolError,
    decode_boot_flags,
    encode_boot_flags,
    open_session_status,
    starts_conversation,
)
from provisiond.lab.vbmc_args import add_arguments
from provisiond.power import pyghmi_fixes
from provisiond.power.ipmi_spec import (
    CC_INVALID_DATA,
    CC_NODE_BUSY,
    CC_NOT_IN_PRESENT_STATE,
    CC_PARAM_NOT_SUPPORTED,
    CMD_CHASSIS_CONTROL,
    CMD_CHASSIS_STATUS,
    CMD_GET_BOOT_OPTIONS,
    CMD_SET_BOOT_OPTIONS,
    NETFN_CHASSIS,
)

logger = logging.getLogger(__name__)

PowerAction = Literal["on", "off", "soft", "reset"]

MAX_BMCS_PER_PROCESS = 500



class MachineBusy(Exception):
    """Raised by a backend that cannot act right now; the BMC answers "node busy" (0xC0)."""


class MachineBackend(Protocol):
    """What a virtual BMC controls. Kept small so a QEMU backend is a few methods.

    Methods are called from the BMC's serving thread; any of them may raise MachineBusy.
    """

    def get_power(self) -> bool:
        """True when the machine is powered on."""
        ...

    def set_power(self, action: PowerAction) -> None:
        """on / off (hard) / soft (ACPI shutdown) / reset (warm reboot while on)."""
        ...

    def get_boot_device(self) -> BootDevice: ...

    def set_boot_device(self, boot: BootDevice) -> None:
        """Override the boot device; a one-time override is consumed by the next boot."""
        ...


class MemoryMachine:
    """A machine that lives in memory: power, a boot override and the list of its boots.

    Booting (power on from off, or reset) uses the override if one is set, else the disk
    (recorded as the "default" device), and clears a one-time override, as firmware does.
    """

    def __init__(
        self, name: str = "machine", on_change: Callable[[str], None] | None = None
    ) -> None:
        self.name = name
        self.powered = False
        self.boot = BootDevice()
        self.boots: list[BootDevice] = []
        self._on_change = on_change
        self._lock = threading.Lock()

    def _notify(self, message: str) -> None:
        if self._on_change is not None:
            self._on_change(f"{self.name} {message}")

    def _boot(self) -> None:
        used = self.boot
        self.boots.append(used)
        if not used.persistent:
            self.boot = BootDevice()
        if used.device == "default":
            self._notify("boots from disk (no boot override)")
        else:
            self._notify(f"boots from {used.describe()}")

    def get_power(self) -> bool:
        with self._lock:
            return self.powered

    def set_power(self, action: PowerAction) -> None:
        with self._lock:
            if action == "on" and not self.powered:
                self.powered = True
                self._notify("power on")
                self._boot()
            elif action in ("off", "soft") and self.powered:
                self.powered = False
                self._notify("power off" + (" (ACPI shutdown)" if action == "soft" else ""))
            elif action == "reset" and self.powered:
                self._notify("reset")
                self._boot()

    def get_boot_device(self) -> BootDevice:
        with self._lock:
            return self.boot

    def set_boot_device(self, boot: BootDevice) -> None:
        with self._lock:
            self.boot = boot
            self._notify(f"boot device set to {boot.describe()}")


class _VbmcSession(serversession.ServerSession):
    """pyghmi's server session with honest cipher-suite negotiation, RAKP 2 errors, and an end.

    pyghmi routes a packet to a session by the client's address and port alone and never
    forgets a session, so a new client that reuses an old client's UDP port (fan-out workers
    come and go) was fed to the stale session and got no answer. Here a packet that starts a
    conversation always goes to the BMC, and Close Session forgets the session.
    """

    def process_pktqueue(self) -> None:
        while self.pktqueue:
            packet = list(self.pktqueue.popleft())
            data, sockaddr = bytearray(packet[0]), packet[1]
            if not (data[:1] == b"\x06" and data[2:4] == b"\xff\x07"):
                continue
            if starts_conversation(data) or sockaddr not in ipmi_session.Session.bmc_handlers:
                self._forget(sockaddr)
                self.bmc.sessionless_data(bytes(data), sockaddr)
                continue
            packet[0] = data
            self._handle_ipmi_packet(data, sockaddr=sockaddr, qent=packet)

    def _forget(self, sockaddr: tuple) -> None:
        handlers = ipmi_session.Session.bmc_handlers.get(sockaddr)
        if handlers is not None and handlers.get(self.bmc.port) is self:
            del handlers[self.bmc.port]
            if not handlers:
                del ipmi_session.Session.bmc_handlers[sockaddr]

    def close_server_session(self) -> None:
        self._forget(self.sockaddr)

    def create_open_session_response(self, request: bytearray) -> bytearray:
        status = open_session_status(request)
        if status == RMCP_OK:
            return super().create_open_session_response(request)
        self.clientsessionid = request[4:8]
        return bytearray([request[0], status, 0, 0]) + self.clientsessionid

    def _got_rakp1(self, data: list[int] | bytearray) -> None:
        namelen = data[27] if len(data) > 27 else 0
        status = RMCP_OK
        if namelen > 16:
            status = RMCP_INVALID_NAME_LENGTH
        else:
            name = bytes(data[28 : 28 + namelen]).decode("utf-8", "replace")
            if not namelen or self.authdata.get(name) is None:
                status = RMCP_UNAUTHORIZED_NAME
        if status != RMCP_OK:
            message = bytearray([data[0], status, 0, 0]) + self.clientsessionid
            self.send_payload(message, ipmi_constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)


class VirtualBmc(pyghmi_bmc.Bmc):
    """One BMC on one UDP port, mapping IPMI chassis commands to a MachineBackend."""

    def __init__(
        self,
        machine: MachineBackend,
        *,
        username: str,
        password: str,
        address: str = "127.0.0.1",
        port: int = 623,
    ) -> None:
        pyghmi_fixes.apply()  # before pyghmi's I/O thread serves this BMC
        super().__init__({username: password}, port=port, address=address)
        self.machine = machine

    # -- sessions ------------------------------------------------------------------------

    def sessionless_data(self, data: bytes, sockaddr: tuple) -> None:
        """Open new RMCP+ sessions with _VbmcSession; everything else as pyghmi does."""
        if (
            len(data) >= 22
            and data[0] == 6
            and data[2:4] == b"\xff\x07"
            and data[4] == 6
            and data[5] == 16
        ):
            _VbmcSession(
                self.authdata,
                self.kg,
                sockaddr,
                self.serversocket,
                bytearray(data[16:]),
                self.uuid,
                bmc=self,
            )
            return
        super().sessionless_data(data, sockaddr)

    # -- chassis -------------------------------------------------------------------------

    def handle_raw_request(self, request: dict, session: serversession.ServerSession) -> None:
        """Chassis commands go to the machine (a busy machine answers "node busy")."""
        handlers = {
            CMD_CHASSIS_STATUS: self.chassis_status,
            CMD_CHASSIS_CONTROL: self.chassis_control,
            CMD_SET_BOOT_OPTIONS: self.set_system_boot_options,
            CMD_GET_BOOT_OPTIONS: self.get_system_boot_options,
        }
        handler = handlers.get(request["command"]) if request["netfn"] == NETFN_CHASSIS else None
        if handler is None:
            super().handle_raw_request(request, session)
            return
        try:
            handler(request, session)
        except MachineBusy:
            session.send_ipmi_response(code=CC_NODE_BUSY)

    def get_system_guid(self) -> uuid.UUID:
        return self.uuid

    def chassis_status(self, request: dict, session: serversession.ServerSession) -> None:
        # Current power state byte (bit 0: on), last power event, misc chassis state.
        session.send_ipmi_response(data=[1 if self.machine.get_power() else 0, 0, 0])

    def chassis_control(self, request: dict, session: serversession.ServerSession) -> None:
        directive = request["data"][0] if request["data"] else None
        powered = self.machine.get_power()
        if directive == 0:
            self.machine.set_power("off")
        elif directive == 1:
            self.machine.set_power("on")
        elif directive == 2:  # power cycle: off, then on again
            if not powered:
                session.send_ipmi_response(code=CC_NOT_IN_PRESENT_STATE)
                return
            self.machine.set_power("off")
            self.machine.set_power("on")
        elif directive == 3:
            if not powered:
                session.send_ipmi_response(code=CC_NOT_IN_PRESENT_STATE)
                return
            self.machine.set_power("reset")
        elif directive == 5:
            self.machine.set_power("soft")
        else:  # 4 (diagnostic interrupt) and unknown directives
            session.send_ipmi_response(code=CC_INVALID_DATA)
            return
        session.send_ipmi_response()

    # -- boot options (pyghmi's versions drop the persistent and UEFI flags) ---------------

    def get_system_boot_options(self, request: dict, session: serversession.ServerSession) -> None:
        if not request["data"] or request["data"][0] & 0x7F != 5:
            session.send_ipmi_response(code=CC_PARAM_NOT_SUPPORTED)
            return
        session.send_ipmi_response(data=encode_boot_flags(self.machine.get_boot_device()))

    def set_system_boot_options(self, request: dict, session: serversession.ServerSession) -> None:
        data = list(request["data"])
        if not data:
            session.send_ipmi_response(code=CC_INVALID_DATA)
            return
        selector = data[0] & 0x7F
        if selector in (0, 3, 4):  # set-in-progress, valid-bit clearing, boot info ack
            session.send_ipmi_response()
            return
        if selector != 5:
            session.send_ipmi_response(code=CC_PARAM_NOT_SUPPORTED)
            return
        try:
            boot = decode_boot_flags(data[1:])
        except ProtocolError:
            session.send_ipmi_response(code=CC_INVALID_DATA)
            return
        self.machine.set_boot_device(boot)
        session.send_ipmi_response()


def serve(stop: threading.Event, poll: float = 0.5) -> None:
    """Answer IPMI for every VirtualBmc of this process until `stop` is set.

    pyghmi runs one I/O thread per process; one loop dispatches for all BMCs in it.
    """
    while not stop.is_set():
        try:
            ipmi_session.Session.wait_for_rsp(timeout=poll)
        except Exception:  # one bad packet or session must not take every BMC down
            logger.exception("virtual BMC: error while handling a request (still serving)")


def read_password(password_file: Path | None, password_env: str | None) -> str:
    """The BMC password from a file (first line) or an environment variable, never argv."""
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"cannot read the password file {password_file}: {exc.strerror}; "
                "create it with the password on its first line"
            ) from None
        password = text.splitlines()[0] if text else ""
        where = f"password file {password_file}"
    elif password_env is not None:
        password = os.environ.get(password_env, "")
        where = f"environment variable {password_env}"
    else:
        raise UserError("no BMC password: give --password-file FILE or --password-env VAR")
    if not password:
        raise UserError(f"the {where} is empty; put the BMC password there")
    if len(password.encode()) > 20:
        raise UserError(f"the password in the {where} is longer than IPMI's 20 bytes")
    return password


def run(args: argparse.Namespace) -> int:
    """Start the BMCs, print their power state changes, stop on SIGINT/SIGTERM."""
    # pyghmi's I/O thread uses select(), which handles file descriptors below 1024 only.
    if not 1 <= args.count <= MAX_BMCS_PER_PROCESS:
        raise UserError(
            f"--count {args.count} is out of range; use 1 to {MAX_BMCS_PER_PROCESS} per process "
            "(start more processes for more BMCs)"
        )
    if not 1 <= args.port <= 65535 - args.count + 1:
        raise UserError(f"--port {args.port} with --count {args.count} leaves the UDP port range")
    if len(args.username.encode()) > 16:
        raise UserError(f"--username {args.username!r} is longer than IPMI's 16 bytes")
    password = read_password(args.password_file, args.password_env)
    print_lock = threading.Lock()

    def show(message: str) -> None:
        with print_lock:
            print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    bmcs = []
    for port in range(args.port, args.port + args.count):
        machine = MemoryMachine(f"{args.address}:{port}", on_change=show)
        try:
            bmcs.append(
                VirtualBmc(
                    machine,
                    username=args.username,
                    password=password,
                    address=args.address,
                    port=port,
                )
            )
        except OSError as exc:
            raise UserError(
                f"cannot listen on {args.address} UDP port {port}: {exc.strerror}; "
                "pick a free port with --port"
            ) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    last = args.port + args.count - 1
    ports = str(args.port) if args.count == 1 else f"{args.port}-{last}"
    show(
        f"vbmc: {args.count} BMC(s) listening on {args.address} UDP {ports} (user {args.username})"
    )
    serve(stop)
    show("vbmc: stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisiond.lab.vbmc", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"vbmc: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
