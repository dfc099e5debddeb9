"""Manifests as served: the role templates loaded from disk, secrets resolved or masked.

The thin I/O side of provisiond.roles: it finds `manifests/` (an operator's template dirs
first, as for kickstarts), generates a node's manifest, and either resolves its secret
placeholders with the site's values (only for the node itself) or masks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from provisiond.errors import UserError
from provisiond.inventory import Inventory, Node
from provisiond.roles import ManifestError, generate_manifest, mask_secrets, resolve_secrets, secret_names


def builtin_manifest_dir() -> Path:
    package = Path(__file__).resolve().parent
    for base in (package / "_data", package.parent):
        if (base / "manifests").is_dir():
            return base / "manifests"
    raise UserError(f"provisiond's manifest templates are missing (looked in {package / '_data'} "
                    f"and {package.parent})")


def manifest_environment(template_dirs: list[Path] | None = None) -> jinja2.Environment:
    """Operator dirs first (a template of the same name overrides), then the built-in ones.
    An operator dir may hold a `manifests/` subdirectory or the templates themselves."""
    search: list[str] = []
    for directory in template_dirs or []:
        search += [str(Path(directory) / "manifests"), str(directory)]
    search.append(str(builtin_manifest_dir()))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )


class ManifestService:
    """Builds manifests for one inventory."""

    def __init__(self, inventory: Inventory, template_dirs: list[Path] | None = None) -> None:
        self.inventory = inventory
        self.env = manifest_environment(template_dirs)

    def manifest(self, node: Node, server_url: str) -> dict[str, Any]:
        """The manifest with secret placeholders (raises UserError naming a template problem)."""
        try:
            return generate_manifest(self.env, self.inventory, node, server_url).as_json()
        except ManifestError as exc:
            raise UserError(str(exc)) from None

    def for_node(self, node: Node, server_url: str, secret_value: Any) -> dict[str, Any]:
        """The manifest as the node gets it: `secret_value(name)` supplies each referenced secret;
        `mask` lists their values, which the agent never prints, reports or journals."""
        manifest = self.manifest(node, server_url)
        values = {name: secret_value(name) for name in secret_names(manifest)}
        resolved = resolve_secrets(manifest, values)
        if values:
            resolved["mask"] = sorted(values.values())
        return resolved

    def masked(self, node: Node, server_url: str) -> dict[str, Any]:
        return mask_secrets(self.manifest(node, server_url))
