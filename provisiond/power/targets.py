"""Inventory nodes to BMC targets (passwords read now), shared by `power`, `provision` and
`doctor`: a node that cannot be reached becomes a failed NodeResult saying what to do."""

from __future__ import annotations

from provisiond.errors import UserError
from provisiond.inventory import Node
from provisiond.power.base import BmcTarget, NodeResult


def bmc_targets(nodes: list[Node], action: str) -> tuple[list[BmcTarget], list[NodeResult]]:
    """BMC targets with passwords read now; nodes that cannot be reached become failures."""
    targets, failures = [], []
    for node in nodes:
        if node.bmc is None:
            failures.append(NodeResult(
                name=node.hostname, action=action, ok=False, error_kind="no BMC",
                message=f"{node.hostname} has no bmc: section in the inventory; add one "
                "(address, username, password_file or password_env) or power it by hand",
            ))
            continue
        try:
            password = node.bmc.password()
        except UserError as exc:
            failures.append(NodeResult(
                name=node.hostname, action=action, ok=False, error_kind="no password",
                message=str(exc),
            ))
            continue
        targets.append(BmcTarget(
            name=node.hostname, address=node.bmc.address, port=node.bmc.port,
            username=node.bmc.username, password=password, uefi=node.uefi,
            driver=node.bmc.driver,
        ))
    return targets, failures
