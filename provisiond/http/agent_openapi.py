"""The OpenAPI description of the agent blueprint (merged into /api/openapi.json)."""

from __future__ import annotations

from typing import Any


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_HOST = {"name": "hostname", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "node host name as in the inventory"}
_FACT = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "fact name, e.g. gluster-brick-ready"}
_AGENT = [{"agentCredential": []}]
_REFUSED = {"401": _error("no agent credential"), "403": _error("another node's or a stale credential"),
            "404": _error("not in the inventory")}
_OBJECT = {"type": "object"}

SECURITY = {"agentCredential": {"type": "http", "scheme": "bearer",
                                "description": "the node's agent credential (/etc/provisiond/agent.credential)"}}

SCHEMAS: dict[str, Any] = {
    "AgentProgress": {
        "type": ["object", "null"],
        "description": "the node's current step (\"index of count\") and what a barrier waits for",
        "properties": {"step": {"type": ["string", "null"]}, "title": {"type": ["string", "null"]},
                       "kind": {"type": ["string", "null"]}, "index": {"type": ["integer", "null"]},
                       "count": {"type": ["integer", "null"]}, "status": {"type": ["string", "null"]},
                       "waiting": {"oneOf": [{"$ref": "#/components/schemas/Barrier"}, {"type": "null"}]}},
    },
    "Barrier": {
        "type": "object", "required": ["fact", "state", "have", "missing", "failed", "message"],
        "properties": {"fact": {"type": "string"}, "state": {"enum": ["met", "waiting", "failed"]},
                       "have": {"type": "array", "items": {"type": "string"}},
                       "missing": {"type": "array", "items": {"type": "string"}},
                       "failed": {"type": "object", "additionalProperties": {"type": "string"}},
                       "message": {"type": "string"}},
    },
}

PATHS: dict[str, Any] = {
    "/agent/provisiond-agent.pyz": {"get": {
        "summary": "the agent as one file (a zipapp: python3 provisiond-agent.pyz)",
        "responses": {"200": {"description": "zipapp", "content": {"application/zip": {}}}}}},
    "/agent/provisiond-agent.service": {"get": {
        "summary": "the agent's systemd unit",
        "responses": {"200": {"description": "unit file", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/api/v1/nodes/{hostname}/manifest": {"get": {
        "summary": "the node's role manifest, its secrets resolved (see docs/agent.md)",
        "parameters": [_HOST], "security": _AGENT,
        "responses": {"200": _json("the manifest", {
            "type": "object", "required": ["version", "hostname", "role", "os_family", "server", "steps"],
            "properties": {"version": {"type": "integer"}, "hostname": {"type": "string"},
                           "role": {"type": "string"}, "os_family": {"enum": ["debian", "rhel"]},
                           "server": {"type": "string"}, "steps": {"type": "array", "items": _OBJECT},
                           "mask": {"type": "array", "items": {"type": "string"},
                                    "description": "secret values the agent never prints"}}}),
            **_REFUSED, "500": _error("a manifest template is broken (the message names it)")}}},
    "/api/v1/nodes/{hostname}/agent-credential": {"post": {
        "summary": "operator: a new agent credential for the node (the old one stops working)",
        "parameters": [_HOST], "security": [{"operatorToken": []}],
        "responses": {"200": _json("the credential", {
            "type": "object", "required": ["hostname", "credential"],
            "properties": {"hostname": {"type": "string"}, "credential": {"type": "string"}}}),
            "401": _error("no token"), "403": _error("wrong token"), "404": _error("not in the inventory")}}},
    "/api/v1/nodes/{hostname}/agent-events": {"post": {
        "summary": "a step's progress from the node's agent (moves installed -> configuring -> ready|failed)",
        "parameters": [_HOST], "security": _AGENT,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["status"],
            "properties": {"status": {"enum": ["run-started", "started", "progress", "ok", "changed", "failed",
                                               "run-finished"]},
                           "step": {"type": "string"}, "title": {"type": "string"}, "kind": {"type": "string"},
                           "index": {"type": "integer"}, "count": {"type": "integer"},
                           "message": {"type": "string"}, "stderr": {"type": "string"}}}}}},
        "responses": {"200": _json("the node's state", {
            "type": "object", "required": ["hostname", "state"],
            "properties": {"hostname": {"type": "string"}, "state": {"$ref": "#/components/schemas/State"}}}),
            "400": _error("bad body"), **_REFUSED}}},
    "/api/v1/nodes/{hostname}/facts/{name}": {
        "get": {"summary": "a fact the node reported", "parameters": [_HOST, _FACT], "security": _AGENT,
                "responses": {"200": _json("the fact", _OBJECT), "400": _error("bad fact name"), **_REFUSED}},
        "put": {"summary": "report a fact (what barriers wait on)", "parameters": [_HOST, _FACT],
                "security": _AGENT,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["value"], "properties": {"value": {}}}}}},
                "responses": {"200": _json("the fact", _OBJECT), "400": _error("bad body or fact name"),
                              **_REFUSED}}},
    "/api/v1/facts": {"get": {
        "summary": "every reported fact: {fact: {host: value}}",
        "responses": {"200": _json("facts", {"type": "object", "required": ["facts"],
                                             "properties": {"facts": _OBJECT}})}}},
    "/api/v1/nodes/{hostname}/barrier": {"post": {
        "summary": "evaluate a barrier for the waiting node: met, waiting (who is missing) or failed (who died)",
        "parameters": [_HOST], "security": _AGENT,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["fact", "nodes"],
            "properties": {"fact": {"type": "string"}, "nodes": {"type": "array", "items": {"type": "string"}},
                           "step": {"type": "string"}}}}}},
        "responses": {"200": _json("the barrier", {"$ref": "#/components/schemas/Barrier"}),
                      "400": _error("bad body"), **_REFUSED}}},
    "/api/v1/nodes/{hostname}/layout": {"post": {
        "summary": "check the node's disk facts (lsblk, vgs, lvs, findmnt JSON) against its storage model",
        "parameters": [_HOST], "security": _AGENT,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["lsblk", "vgs", "lvs", "findmnt"]}}}},
        "responses": {"200": _json("problems (empty: it matches)", {
            "type": "object", "required": ["hostname", "problems", "summary"],
            "properties": {"hostname": {"type": "string"}, "summary": {"type": "string"},
                           "problems": {"type": "array", "items": {"type": "string"}}}}),
            "400": _error("not lsblk/vgs/lvs/findmnt JSON"), **_REFUSED}}},
}
