"""The node state machine, in one place: states, the events that move them, one rule.

    new -> powering-on -> pxe -> installing -> installed -> configuring -> ready
    failed (with a reason); `provision` (re)enters at powering-on from any state.

Callers report what happened (an Event); `next_state(state, event)` says where that leads.
Nobody names a target state. The table is built with `add_transition(from, to, event)`, as in
Ironic's state machine, so the whole life of a node reads as one list below.

Observations can be skipped (a box powered on by hand is first seen at `pxe`; behind another
DHCP server the first sign may be the answer-file fetch), so some forward jumps are legal.
Going backwards needs the operator: `provision`, or `netboot on` for a node past its install
(which visibly puts it back to `new`, waiting for its reinstall).
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
    DNS = "dns"


class Event(StrEnum):
    """What happened to a node; the state machine decides what it means."""

    DHCP_BOOT_REQUEST = "dhcp-boot-request"  # DHCP handed the node its installer's loader
    BOOT_CONFIG_FETCHED = "boot-config-fetched"  # iPXE script / pxelinux / GRUB config (install)
    ANSWER_FETCHED = "answer-fetched"  # the node fetched its preseed/kickstart
    INSTALL_STARTED = "install-started"  # installer callback
    INSTALL_FINISHED = "install-finished"  # installer callback (netboot goes off with it)
    INSTALL_FAILED = "install-failed"  # the image method's deploy ramdisk: a phase failed
    AGENT_STARTED = "agent-started"
    AGENT_STEP = "agent-step"
    AGENT_READY = "agent-ready"
    AGENT_FAILED = "agent-failed"
    PROVISION = "provision"  # operator: (re)install now
    NETBOOT_ON = "netboot-on"  # operator: install at the next network boot
    NETBOOT_OFF = "netboot-off"  # operator: boot local from now on
    POWER_FAILED = "power-failed"  # provision could not power the node on
    DEADLINE = "deadline"  # the node stayed in an active state past its timeout


# Observations: a sign seen on the wire. When it does not apply (a ready node's DHCP) it is
# ignored; every other event that does not apply is refused (409 for a callback).
OBSERVATIONS = frozenset({Event.DHCP_BOOT_REQUEST, Event.BOOT_CONFIG_FETCHED, Event.ANSWER_FETCHED})

# States in which a node is expected to move on by itself; a deadline applies to them.
ACTIVE = frozenset(
    {State.POWERING_ON, State.PXE, State.INSTALLING, State.INSTALLED, State.CONFIGURING}
)
# Entering one of these, a node runs its installed OS on its own address: its name is published
# (provisiond.dns follows the store's state events for this; nothing calls it directly).
ON_ITS_ADDRESS = frozenset({State.INSTALLED, State.CONFIGURING, State.READY})
# States in which a node with netboot on gets the installer (a failed node boots local: it
# moves only by the operator, so it never loops into an install its callbacks cannot report).
INSTALLABLE = frozenset({State.NEW, State.POWERING_ON, State.PXE, State.INSTALLING})

TRANSITIONS: dict[tuple[State, Event], State] = {}


def add_transition(sources: State | frozenset[State] | set[State], target: State, event: Event) -> None:
    """Declare that `event` moves a node from each of `sources` to `target`."""
    for source in sources if isinstance(sources, frozenset | set) else {sources}:
        TRANSITIONS[(source, event)] = target


_ALL = frozenset(State)
_POST_INSTALL = frozenset({State.INSTALLED, State.CONFIGURING, State.READY, State.FAILED})

for _event in (Event.DHCP_BOOT_REQUEST, Event.BOOT_CONFIG_FETCHED):
    add_transition({State.NEW, State.POWERING_ON, State.PXE}, State.PXE, _event)
for _event in (Event.ANSWER_FETCHED, Event.INSTALL_STARTED):
    add_transition(INSTALLABLE, State.INSTALLING, _event)
add_transition({State.INSTALLING, State.INSTALLED}, State.INSTALLED, Event.INSTALL_FINISHED)
add_transition(INSTALLABLE, State.FAILED, Event.INSTALL_FAILED)
# A failed node's agent that runs again (the operator fixed the cause and rebooted the node, or
# restarted the agent) resumes from its journal: the node is configuring again, not stuck failed.
add_transition({State.INSTALLED, State.CONFIGURING, State.FAILED}, State.CONFIGURING, Event.AGENT_STARTED)
add_transition(State.CONFIGURING, State.CONFIGURING, Event.AGENT_STEP)
add_transition({State.INSTALLED, State.CONFIGURING, State.READY}, State.READY, Event.AGENT_READY)
add_transition({State.INSTALLED, State.CONFIGURING}, State.FAILED, Event.AGENT_FAILED)
add_transition(_ALL, State.POWERING_ON, Event.PROVISION)
add_transition(State.POWERING_ON, State.FAILED, Event.POWER_FAILED)
add_transition(ACTIVE, State.FAILED, Event.DEADLINE)
for _state in _ALL:
    add_transition(_state, _state, Event.NETBOOT_OFF)
# netboot on keeps a node on its way to an install where it is; one past its install goes
# back to `new` (a visible state change), to wait for its reinstall.
for _state in INSTALLABLE:
    add_transition(_state, _state, Event.NETBOOT_ON)
add_transition(_POST_INSTALL, State.NEW, Event.NETBOOT_ON)
del _event, _state


class IllegalTransition(ValueError):
    """An event the state machine does not accept in this state; the message says what would be."""


def next_state(current: State, event: Event) -> State:
    """The state `event` leads to from `current`; IllegalTransition when it does not apply."""
    target = TRANSITIONS.get((current, event))
    if target is None:
        accepted = sorted(e.value for (s, e) in TRANSITIONS if s is current)
        raise IllegalTransition(
            f"{event} does not apply to a {current} node (a {current} node accepts: "
            f"{', '.join(accepted)})"
        )
    return target


def installs(state: State, netboot: bool) -> bool:
    """Whether a node network-boots into its installer now (else it boots local)."""
    return netboot and state in INSTALLABLE
