"""service: enabled and started (or stopped); restarted when a watched file changed."""

from __future__ import annotations

from typing import Any

from agent.steps import Outcome, StepFailed


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    name, manager = step["name"], ctx.service_manager
    if manager is None:
        raise StepFailed("no service manager on this node")
    actions = []
    if step["enabled"] and not manager.is_enabled(name):
        actions.append("enable")
    if not step["enabled"] and manager.is_enabled(name):
        actions.append("disable")
    active = manager.is_active(name)
    changed_paths = ctx.journal.changed_since_restart(name, step["watch"])
    if step["state"] == "started":
        if not active:
            actions.append("start")
        elif changed_paths:
            actions.append("restart")
    elif active:
        actions.append("stop")
    if not actions:
        return Outcome(False, f"{name} is as wanted ({'enabled, ' if step['enabled'] else ''}{step['state']})")
    reason = f" ({', '.join(changed_paths)} changed)" if "restart" in actions else ""
    if ctx.dry_run:
        return Outcome(True, f"would {', '.join(actions)} {name}{reason}")
    for action in actions:
        getattr(manager, action)(name)
    if step["state"] == "started":
        ctx.journal.restarted(name, step["watch"])
        if not manager.is_active(name):
            raise StepFailed(f"{name} is not running after {', '.join(actions)}")
    return Outcome(True, f"{', '.join(actions)} {name}{reason}")
