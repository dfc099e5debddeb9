"""Power nodes on in waves: a whole rack powered on at once draws its inrush current at once
and puts every firmware on DHCP, TFTP and HTTP in the same second.

`site.power_waves` (inventory) or `--wave-size`/`--wave-interval` split the selected nodes
into waves of `size` nodes (in inventory order); a wave starts `interval` seconds after the
previous one started, and never before the previous one's power calls are done. Only actions
that power a node up go in waves; status and power-off go out at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from provisiond.power.base import BmcTarget, NodeResult
from provisiond.power.fanout import PowerConfig, run_action

# Actions that power a node up (each node then boots: firmware, DHCP, TFTP, HTTP).
WAVE_ACTIONS = frozenset({"on", "cycle", "reset", "pxe-boot"})

T = TypeVar("T")


MAX_INTERVAL = 3600.0  # seconds between wave starts: beyond an hour it is a typo


class PowerWaves(BaseModel):
    """`size` nodes per wave, a wave starting `interval` seconds after the previous one: the
    inventory's `site.power_waves` (validated with file:line errors) or the command line's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=1)
    interval: float = Field(ge=0, le=MAX_INTERVAL)


def split(items: Sequence[T], waves: PowerWaves | None) -> list[list[T]]:
    """The waves, in order; everything in one wave when `waves` is None."""
    if waves is None:
        return [list(items)] if items else []
    return [list(items[start:start + waves.size]) for start in range(0, len(items), waves.size)]


def run_in_waves(
    targets: Sequence[BmcTarget],
    action: str,
    config: PowerConfig,
    waves: PowerWaves | None,
    *,
    before_wave: Callable[[int, list[BmcTarget]], None] | None = None,
    on_result: Callable[[NodeResult], None] | None = None,
    run: Callable[..., list[NodeResult]] = run_action,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[NodeResult]:
    """Run `action` wave after wave; results in the targets' order.

    `before_wave(index, wave)` runs just before a wave's power calls (provision marks the
    wave's nodes for install there, so a later wave's `powering-on` deadline starts when its
    nodes are really powered on). `run`, `sleep` and `clock` are replaceable for tests.
    """
    if action not in WAVE_ACTIONS:
        waves = None
    results: list[NodeResult] = []
    started: float | None = None
    for index, wave in enumerate(split(targets, waves)):
        if started is not None and waves is not None:
            sleep(max(0.0, started + waves.interval - clock()))
        started = clock()
        if before_wave is not None:
            before_wave(index, wave)
        results += run(wave, action, config, on_result=on_result)
    return results
