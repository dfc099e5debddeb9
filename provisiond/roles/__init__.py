"""Roles: what a node of each role must become after its install, as a manifest of steps.

Pure code, like the storage model: no files, no network, no clock. The generator takes the
inventory, a node and a Jinja2 environment (the templates in `manifests/`, which an operator
can override by name) and returns the node's manifest; the HTTP layer resolves its secret
placeholders for the node itself and masks them everywhere else. The contract between
provisiond and the agent (step kinds and their fields) is in `schema` and docs/agent.md.
"""

from provisiond.roles.generate import ROLE_PARTS, generate_manifest
from provisiond.roles.schema import STEP_KINDS, Manifest, ManifestError, validate_step
from provisiond.roles.secrets import SECRET_SCOPES, mask_secrets, resolve_secrets, secret_names

# Role modules that add parts, template context and secrets to the roles when imported.
from provisiond.roles import openstack  # noqa: F401  isort: skip

__all__ = [
    "ROLE_PARTS",
    "SECRET_SCOPES",
    "STEP_KINDS",
    "Manifest",
    "ManifestError",
    "generate_manifest",
    "mask_secrets",
    "resolve_secrets",
    "secret_names",
    "validate_step",
]
