"""Secrets in manifests: placeholders, scopes, resolution and masking.

A template never sees a secret's value: `secret("nova-db")` writes the placeholder
`${secret:nova-db}` into a step field (alone or inside a string such as a database URL).
SECRET_SCOPES says which roles may reference each secret; the generator refuses a manifest
that references a secret outside its role's scope, so a node's manifest can only ever carry
its own role's secrets. The server resolves the placeholders with the site's values only when
it answers the node itself; `render manifest`, logs and events see the masked form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\$\{secret:([a-z0-9][a-z0-9_-]{0,63})\}")
MASK = "********"

# secret name -> roles whose manifests may reference it. Other role modules add theirs
# (e.g. the OpenStack roles: database and service passwords) at import time.
SECRET_SCOPES: dict[str, frozenset[str]] = {}


def placeholder(name: str) -> str:
    if not PLACEHOLDER.fullmatch(f"${{secret:{name}}}"):
        raise ValueError(f"secret name {name!r} must be lower-case letters, digits, '-' or '_'")
    return f"${{secret:{name}}}"


def _walk(value: Any, on_text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return on_text(value)
    if isinstance(value, list | tuple):
        return [_walk(item, on_text) for item in value]
    if isinstance(value, dict):
        return {key: _walk(item, on_text) for key, item in value.items()}
    return value


def secret_names(value: Any) -> set[str]:
    """Every secret referenced anywhere in value (a step, a list of steps, a manifest dict)."""
    found: set[str] = set()

    def collect(text: str) -> str:
        found.update(PLACEHOLDER.findall(text))
        return text

    _walk(value, collect)
    return found


def out_of_scope(value: Any, role: str) -> list[str]:
    """Secrets referenced in value that a node of `role` may not hold (sorted)."""
    return sorted(name for name in secret_names(value) if role not in SECRET_SCOPES.get(name, frozenset()))


def resolve_secrets(value: Any, values: Mapping[str, str]) -> Any:
    """A copy of value with every placeholder replaced by its secret (KeyError if one is missing)."""
    return _walk(value, lambda text: PLACEHOLDER.sub(lambda match: values[match.group(1)], text))


def mask_secrets(value: Any) -> Any:
    """A copy of value with every placeholder shown as ******** (for render, logs, events)."""
    return _walk(value, lambda text: PLACEHOLDER.sub(MASK, text))
