"""Role -> manifest: renders the role's parts (Jinja2 templates of YAML step lists) and checks them.

A role is an ordered list of parts (ROLE_PARTS); each part is `manifests/<part>.yaml.j2`, which
renders to a YAML list of steps (possibly empty: a part decides from its context whether this
node needs it). The caller passes the Jinja2 environment, so this module reads no files and an
operator's template of the same name wins, as with kickstarts. Other role modules (OpenStack)
append their parts to ROLE_PARTS, their names to PACKAGE_NAMES and their own template context
(computed from the inventory like the GlusterFS plan) to CONTEXT_PROVIDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2
import yaml

from provisiond.roles.gluster import BRICK_READY, VOLUME_READY, plan_gluster
from provisiond.roles.schema import OS_FAMILIES, Manifest, ManifestError, validate_steps
from provisiond.roles.secrets import out_of_scope, placeholder

ROLE_PARTS: dict[str, list[str]] = {
    "compute": ["layout", "gluster-server", "gluster-volume", "gluster-mount"],
    "controller": ["layout", "gluster-server", "gluster-volume", "gluster-mount"],
}

# More template context from other role modules: name -> f(inventory, node, os_family).
CONTEXT_PROVIDERS: dict[str, Callable[[Any, Any, str], Any]] = {}

# Generic package name -> the name in each OS family.
PACKAGE_NAMES: dict[str, dict[str, str]] = {
    "glusterfs-server": {"debian": "glusterfs-server", "rhel": "glusterfs-server"},
    "glusterfs-client": {"debian": "glusterfs-client", "rhel": "glusterfs-fuse"},
    "xfsprogs": {"debian": "xfsprogs", "rhel": "xfsprogs"},
}


def package_name(name: str, os_family: str) -> str:
    try:
        return PACKAGE_NAMES[name][os_family]
    except KeyError:
        raise ManifestError(f"no package name for {name!r} on {os_family} "
                            "(add it to provisiond.roles.generate.PACKAGE_NAMES)") from None


def template_context(inventory: Any, node: Any, server_url: str) -> dict[str, Any]:
    """What every part template sees (documented in docs/agent.md)."""
    os_family = OS_FAMILIES[node.os_name]
    roles = {item.hostname: item.role for item in inventory.nodes}
    site = inventory.site
    return {
        **{name: provide(inventory, node, os_family) for name, provide in CONTEXT_PROVIDERS.items()},
        "node": node,
        "site": site,
        "role": node.role,
        "os_family": os_family,
        "server": server_url,
        "nodes": list(inventory.nodes),
        "computes": [name for name, role in roles.items() if role == "compute"],
        "controllers": [name for name, role in roles.items() if role == "controller"],
        "gluster": plan_gluster(site.gluster, roles, node.hostname),
        "agent": site.agent,
        "facts": {"brick_ready": BRICK_READY, "volume_ready": VOLUME_READY},
        "secret": placeholder,
        "pkg": lambda name: package_name(name, os_family),
    }


def render_part(env: jinja2.Environment, part: str, context: dict[str, Any]) -> list[Any]:
    name = f"{part}.yaml.j2"
    try:
        text = env.get_template(name).render(context)
    except jinja2.TemplateNotFound:
        raise ManifestError(f"manifest template {name} not found (in manifests/ or an override dir)") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(f"manifest template {exc.filename or name}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise ManifestError(f"manifest template {name}: {exc.message}") from None
    try:
        steps = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1} (rendered)" if mark is not None else ""
        raise ManifestError(f"manifest template {name}{line}: not valid YAML: "
                            f"{getattr(exc, 'problem', exc)}") from None
    if steps is None:
        return []
    if not isinstance(steps, list):
        raise ManifestError(f"manifest template {name}: must render to a YAML list of steps")
    return steps


def generate_manifest(env: jinja2.Environment, inventory: Any, node: Any, server_url: str) -> Manifest:
    """The manifest of `node` (secrets as placeholders). Raises ManifestError naming the problem."""
    if node.role not in ROLE_PARTS:
        raise ManifestError(f"{node.hostname}: no manifest parts for role {node.role!r}")
    context = template_context(inventory, node, server_url)
    raw: list[Any] = []
    for part in ROLE_PARTS[node.role]:
        raw += render_part(env, part, context)
    steps = validate_steps(raw, f"manifest of {node.hostname}")
    foreign = out_of_scope(list(steps), node.role)
    if foreign:
        raise ManifestError(f"manifest of {node.hostname}: secret(s) {', '.join(foreign)} may not be "
                            f"given to a {node.role} node (see SECRET_SCOPES)")
    return Manifest(node.hostname, node.role, context["os_family"], server_url, steps)
