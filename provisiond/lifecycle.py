"""The node state machine, in one place.

    new -> powering-on -> pxe -> installing -> installed -> configuring -> ready
    failed (with a reason) from any state; `provision` (re)enters at powering-on.

Observations can be skipped (a box powered on by hand is first seen at `pxe`; behind another
DHCP server the first sign may be the kickstart fetch), so some forward jumps are legal.
Going backwards is only possible through `provision`.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    NEW = "new"
    POWERING_ON = "powering-on"
    PXE = "pxe"
    INSTALLING = "installing"
    INSTALLED = "installed"
    CONFIGURING = "configuring"
    READY = "ready"
    FAILED = "failed"


class Source(StrEnum):
    """Who caused a transition or event."""

    DHCP = "dhcp"
    TFTP = "tftp"
    HTTP = "http"
    IPMI = "ipmi"
    AGENT = "agent"
    OPERATOR = "operator"
    TIMER = "timer"


FORWARD: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.POWERING_ON, State.PXE, State.INSTALLING}),
    State.POWERING_ON: frozenset({State.PXE, State.INSTALLING}),
    State.PXE: frozenset({State.INSTALLING}),
    State.INSTALLING: frozenset({State.INSTALLED}),
    State.INSTALLED: frozenset({State.CONFIGURING, State.READY}),
    State.CONFIGURING: frozenset({State.READY}),
    State.READY: frozenset(),
    State.FAILED: frozenset(),
}

# States in which a node is expected to move on by itself; a deadline applies to them.
ACTIVE = frozenset(
    {State.POWERING_ON, State.PXE, State.INSTALLING, State.INSTALLED, State.CONFIGURING}
)


class IllegalTransition(ValueError):
    """A transition the state machine does not allow; the message says what would be legal."""


def check_transition(current: State, target: State, *, provision: bool = False) -> None:
    """Raise IllegalTransition unless `current -> target` is allowed.

    `provision=True` is the operator's (re)start: any state may go to powering-on.
    Failing is always allowed, except from failed itself.
    """
    if provision:
        if target is not State.POWERING_ON:
            raise IllegalTransition(f"provision enters at {State.POWERING_ON}, not {target}")
        return
    if target is State.FAILED:
        if current is State.FAILED:
            raise IllegalTransition("node is already failed")
        return
    if target not in FORWARD[current]:
        legal = ", ".join(sorted(FORWARD[current] | {State.FAILED})) if current is not State.FAILED else ""
        hint = f"legal from {current}: {legal}" if legal else f"a {current} node moves only by `provision`"
        raise IllegalTransition(f"cannot go from {current} to {target} ({hint})")
