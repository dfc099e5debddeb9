"""Power control of nodes through their BMCs (IPMI today, behind a driver interface)."""

from provisiond.power.base import BmcTarget, ErrorKind, NodeResult, PowerDriver, PowerError
from provisiond.power.fanout import ACTIONS, PowerConfig, run_action

__all__ = [
    "ACTIONS",
    "BmcTarget",
    "ErrorKind",
    "NodeResult",
    "PowerConfig",
    "PowerDriver",
    "PowerError",
    "run_action",
]
