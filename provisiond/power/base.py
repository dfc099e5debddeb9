"""What callers of power control see: a small driver interface, targets, errors, results.

IPMI is the first driver; a Redfish driver implements the same PowerDriver and nothing that
calls it changes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a power operation failed, in the operator's words."""

    UNREACHABLE = "unreachable"
    AUTH = "authentication failed"
    CIPHER = "cipher suite mismatch"
    BUSY = "BMC busy"
    TIMEOUT = "timed out"
    REFUSED = "refused by BMC"
    PROTOCOL = "protocol error"
    INTERNAL = "internal error"

    @property
    def transient(self) -> bool:
        """Worth retrying: the same request may well succeed a moment later."""
        return self is ErrorKind.BUSY


class PowerError(Exception):
    """A failed power operation on one BMC; the message never contains the password."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}" if detail else str(kind))
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class BmcTarget:
    """One node's BMC, with the password already read (repr never shows it)."""

    name: str
    address: str
    port: int = 623
    username: str = ""
    password: str = field(default="", repr=False)
    uefi: bool = False
    driver: str = "ipmi"  # the inventory's bmc.driver; picks the PowerDriver

    @property
    def key(self) -> tuple[str, int]:
        """Identifies the BMC (two names on one BMC share its one-at-a-time slot)."""
        return (self.address, self.port)

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"


class PowerDriver(abc.ABC):
    """Power control of one machine through its management controller.

    Every method is bounded in time and raises PowerError (with an ErrorKind) on failure.
    """

    @abc.abstractmethod
    def status(self) -> str:
        """'on' or 'off'."""

    @abc.abstractmethod
    def on(self) -> None: ...

    @abc.abstractmethod
    def off(self) -> None:
        """Hard power off, no OS shutdown."""

    @abc.abstractmethod
    def soft(self) -> None:
        """Ask the OS to shut down (ACPI power button)."""

    @abc.abstractmethod
    def cycle(self) -> None:
        """Power off then on (the machine must be on)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Warm reset (the machine must be on)."""

    @abc.abstractmethod
    def set_boot_device(self, device: str, persist: bool = False, uefi: bool = False) -> None:
        """Boot from `device` ('network', 'hd', ...) at the next boot, or always if persist."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the session with the controller (a BMC has few session slots) and the
        claim on it; the driver may be used again afterwards."""

    def __enter__(self) -> PowerDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class NodeResult:
    """The outcome of one action on one node (sent back from worker processes, so plain data)."""

    name: str
    action: str
    ok: bool
    power: str | None = None
    done: str = ""
    error_kind: str | None = None
    message: str = ""
    ipmi_calls: int = 0  # IPMI operations sent, retries included (pxe-boot: boot device + power on)
    elapsed: float = 0.0
