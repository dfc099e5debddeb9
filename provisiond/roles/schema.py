"""The manifest contract: the step kinds, their fields, and the manifest around them.

A manifest is JSON: `{"version": 1, "hostname", "role", "os_family", "server", "steps": [...]}`.
Every step has `id` (unique in its manifest), `kind` and `title`; the other fields depend on
the kind and are listed in STEP_KINDS as (type, required, default). docs/agent.md describes
each field; the agent (agent/steps/<kind>.py) implements each kind. Changing this table is
changing the contract: say so in docs/agent.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MANIFEST_VERSION = 1
OS_FAMILIES = {"debian12": "debian", "rocky9": "rhel"}
STEP_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}\Z")
FACT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
MODE = re.compile(r"^0?[0-7]{3,4}\Z")

Number = (int, float)
# kind -> field -> (accepted type(s), required, default). "id", "kind", "title" are common.
STEP_KINDS: dict[str, dict[str, tuple[Any, bool, Any]]] = {
    "packages": {
        "names": (list, True, None),  # package names for this node's OS family
    },
    "file": {
        "path": (str, True, None),
        "state": (str, False, "file"),  # file | directory
        "content": (str, False, None),  # required for state=file
        "mode": (str, False, None),  # "0644"; None leaves the mode alone
        "owner": (str, False, None),
        "group": (str, False, None),
    },
    "ini": {
        "path": (str, True, None),
        "section": (str, True, None),  # "" or "DEFAULT" for options before any section
        "option": (str, True, None),
        "value": (str, True, None),
        "mode": (str, False, None),  # used when the file is created
    },
    "service": {
        "name": (str, True, None),
        "enabled": (bool, False, True),
        "state": (str, False, "started"),  # started | stopped
        "watch": (list, False, []),  # paths: a change to one of them (file/ini step) restarts it
    },
    "command": {
        "argv": (list, False, None),  # exactly one of argv and shell
        "shell": (str, False, None),  # run by /bin/sh -c
        "creates": (str, False, None),  # skip when this path exists
        "unless": (str, False, None),  # skip when this shell command exits 0
        "timeout": (Number, False, 600),  # seconds per attempt
        "retries": (int, False, 0),  # further attempts after a failed one
        "delay": (Number, False, 2),  # seconds between attempts
        "env": (dict, False, {}),
        "changes": (bool, False, True),  # false: a check; success reports ok, never changed
    },
    "mount": {
        "src": (str, True, None),
        "path": (str, True, None),
        "fstype": (str, True, None),
        "options": (str, False, "defaults"),
        "check_writable": (bool, False, False),
        "timeout": (Number, False, 120),  # seconds for the mount command
    },
    "barrier": {
        "fact": (str, True, None),  # e.g. gluster-brick-ready
        "nodes": (list, True, None),  # host names that must all have reported the fact
        "timeout": (Number, False, 3600),
        "poll": (Number, False, 2),  # seconds between asks
    },
    "report": {
        "fact": (str, True, None),
        "value": (object, False, {}),  # any JSON
    },
    "layout": {},  # the agent sends lsblk/vgs/lvs/findmnt; provisiond checks the storage model
}
COMMON_FIELDS = ("id", "kind", "title")
CHOICES = {("file", "state"): ("file", "directory"), ("service", "state"): ("started", "stopped")}


class ManifestError(ValueError):
    """A manifest or one of its steps breaks the contract; the message names the step and field."""


def _type_name(accepted: Any) -> str:
    names = {str: "a string", list: "a list", dict: "a mapping", bool: "true or false", int: "an integer",
             object: "any JSON value"}
    if isinstance(accepted, tuple):
        return "a number"
    return names.get(accepted, accepted.__name__)


def _check_type(value: Any, accepted: Any) -> bool:
    if accepted is object:
        return True
    if isinstance(value, bool) and accepted is not bool:
        return False
    return isinstance(value, accepted)


def validate_step(raw: Any, where: str = "step") -> dict[str, Any]:
    """Check one step against STEP_KINDS; return it with defaults filled in (a new dict)."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: a step must be a mapping with id, kind and title")
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not STEP_ID.match(step_id):
        raise ManifestError(f"{where}: id {step_id!r} must be lower-case letters, digits, '.', '_' or '-'")
    where = f"{where} ({step_id})"
    kind = raw.get("kind")
    if kind not in STEP_KINDS:
        raise ManifestError(f"{where}: unknown kind {kind!r} (expected one of: {', '.join(STEP_KINDS)})")
    if not isinstance(raw.get("title"), str) or not raw["title"].strip():
        raise ManifestError(f"{where}: title is missing (a short human text shown in status)")
    spec = STEP_KINDS[kind]
    unknown = sorted(set(raw) - set(spec) - set(COMMON_FIELDS))
    if unknown:
        raise ManifestError(f"{where}: unknown field {unknown[0]!r} for a {kind} step "
                            f"(fields: {', '.join(spec) or 'none'})")
    step: dict[str, Any] = {"id": step_id, "kind": kind, "title": raw["title"].strip()}
    for name, (accepted, required, default) in spec.items():
        if raw.get(name) is None:
            if required:
                raise ManifestError(f"{where}: {name} is required for a {kind} step")
            step[name] = default
            continue
        if not _check_type(raw[name], accepted):
            raise ManifestError(f"{where}: {name} must be {_type_name(accepted)}, got {raw[name]!r}")
        allowed = CHOICES.get((kind, name))
        if allowed and raw[name] not in allowed:
            raise ManifestError(f"{where}: {name} must be one of {', '.join(allowed)}, got {raw[name]!r}")
        step[name] = raw[name]
    _check_kind(step, where)
    return step


def _check_kind(step: dict[str, Any], where: str) -> None:
    """Rules that span fields of one kind."""
    kind = step["kind"]
    if kind in ("file", "ini") and step.get("mode") is not None and not MODE.match(step["mode"]):
        raise ManifestError(f"{where}: mode {step['mode']!r} must be octal, e.g. \"0644\"")
    if kind == "file" and step["state"] == "file" and step["content"] is None:
        raise ManifestError(f"{where}: content is required for a file (state: file)")
    for name in ("path",):
        if kind in ("file", "ini", "mount") and not str(step[name]).startswith("/"):
            raise ManifestError(f"{where}: {name} must be an absolute path, got {step[name]!r}")
    if kind == "packages" and (not step["names"] or not all(isinstance(n, str) and n for n in step["names"])):
        raise ManifestError(f"{where}: names must be a non-empty list of package names")
    if kind == "command":
        if (step["argv"] is None) == (step["shell"] is None):
            raise ManifestError(f"{where}: give exactly one of argv (a list) or shell (a string)")
        if step["argv"] is not None and not (step["argv"] and all(isinstance(a, str) for a in step["argv"])):
            raise ManifestError(f"{where}: argv must be a non-empty list of strings")
        if step["timeout"] <= 0 or step["retries"] < 0 or step["delay"] < 0:
            raise ManifestError(f"{where}: timeout must be > 0, retries and delay >= 0")
    if kind in ("barrier", "report") and not FACT_NAME.match(step["fact"]):
        raise ManifestError(f"{where}: fact {step['fact']!r} must be lower-case letters, digits, '.', '_' or '-'")
    if kind == "barrier":
        if not step["nodes"] or not all(isinstance(n, str) and n for n in step["nodes"]):
            raise ManifestError(f"{where}: nodes must be a non-empty list of host names")
        if step["timeout"] <= 0 or step["poll"] <= 0:
            raise ManifestError(f"{where}: timeout and poll must be > 0 seconds")
    if kind == "service" and not all(isinstance(p, str) and p.startswith("/") for p in step["watch"]):
        raise ManifestError(f"{where}: watch must list absolute paths")


@dataclass(frozen=True)
class Manifest:
    """One node's manifest. Step fields may hold secret placeholders (see roles.secrets)."""

    hostname: str
    role: str
    os_family: str
    server: str
    steps: tuple[dict[str, Any], ...] = field(default=())
    version: int = MANIFEST_VERSION

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "hostname": self.hostname, "role": self.role,
            "os_family": self.os_family, "server": self.server, "steps": [dict(s) for s in self.steps],
        }

    def step(self, step_id: str) -> dict[str, Any]:
        return next(step for step in self.steps if step["id"] == step_id)


def validate_steps(raw_steps: list[Any], where: str) -> tuple[dict[str, Any], ...]:
    """Validate a list of steps; ids must be unique across the list."""
    steps = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_steps, start=1):
        step = validate_step(raw, f"{where}: step {number}")
        if step["id"] in seen:
            raise ManifestError(f"{where}: step {number}: id {step['id']!r} is used twice "
                                f"(also step {seen[step['id']]})")
        seen[step["id"]] = number
        steps.append(step)
    return tuple(steps)
