"""Barrier evaluation: has every node named reported the fact, and is any of them dead?

Pure: the server passes the facts it holds and the nodes' states. A waiter fails at once when
a node it waits for has failed (naming that node and its reason): nobody waits out a timeout
for a node that is already dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BarrierStatus:
    fact: str
    state: str  # met | waiting | failed
    have: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)  # hostname -> reason

    @property
    def message(self) -> str:
        if self.state == "met":
            return f"{self.fact}: reported by all of {', '.join(self.have)}"
        if self.state == "failed":
            dead = "; ".join(f"{name} failed: {reason}" for name, reason in self.failed.items())
            return f"{self.fact} will never come: {dead}"
        return f"waiting for {self.fact} from {', '.join(self.missing)}"

    def as_json(self) -> dict[str, object]:
        return {"fact": self.fact, "state": self.state, "have": list(self.have),
                "missing": list(self.missing), "failed": dict(self.failed), "message": self.message}


def evaluate_barrier(
    fact: str, nodes: Iterable[str], reported: Iterable[str], failed: Mapping[str, str]
) -> BarrierStatus:
    """`reported`: nodes that reported the fact; `failed`: failed nodes -> reason.

    A node that reported the fact before it failed still counts as having it.
    """
    wanted = list(dict.fromkeys(nodes))
    done = set(reported)
    have = tuple(name for name in wanted if name in done)
    missing = tuple(name for name in wanted if name not in done)
    dead = {name: failed[name] for name in missing if name in failed}
    state = "failed" if dead else ("met" if not missing else "waiting")
    return BarrierStatus(fact, state, have, missing, dead)

