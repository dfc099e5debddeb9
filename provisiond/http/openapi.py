"""The OpenAPI 3 description of the HTTP service, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from provisiond import __version__
from provisiond.http import agent_openapi, web_openapi
from provisiond.lifecycle import Source


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _binary(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


_HOST = {"name": "hostname", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "node host name as in the inventory"}
_NODE_STATE = {
    "description": "the node after the change",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["hostname", "state", "netboot"],
        "properties": {"hostname": {"type": "string"},
                       "state": {"$ref": "#/components/schemas/State"},
                       "netboot": {"type": "boolean"}},
    }}},
}
_ASSET_RESPONSES = {
    "200": _binary("the whole file"),
    "206": _binary("the requested byte range (Range: bytes=a-b)"),
    "404": _text("no such asset configured"),
    "416": {"description": "the range lies outside the file"},
}

_IMAGE_NODE = {"401": _text("no token"), "403": _text("another node's or a stale token"),
               "404": _text("unknown node, or it does not install by image")}
# The image method's deploy ramdisk (http/deploy.py, docs/images.md).
DEPLOY_PATHS: dict[str, Any] = {
    "/images/ramdisk/{os_name}/{name}": {"get": {
        "summary": "the deploy ramdisk's kernel (vmlinuz) or initramfs (initrd.img)",
        "parameters": [{"name": "os_name", "in": "path", "required": True, "schema": {"type": "string"}},
                       {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {**_ASSET_RESPONSES, "404": _text("not built (provisiond image build)")}}},
    "/deploy/{hostname}/env": {"get": {
        "summary": "deploy settings as shell assignments: token, disk, firmware, image URL + sha256",
        "description": "Served only to the node itself or the operator; the node's fetch moves it "
                       "to installing. No root image for its OS and role: 503 and the node fails.",
        "parameters": [_HOST], "security": [{}, {"operatorToken": []}],
        "responses": {"200": _text("KEY='value' lines"), "403": _text("not this node"),
                      "404": _text("unknown node, or it does not install by image"),
                      "503": _text("no root image built for the node's OS and role")}}},
    "/deploy/{hostname}/layout.sh": {"get": {
        "summary": "the layout script for the node's disk (partitions, LVM, mkfs, mounts, fstab)",
        "parameters": [_HOST, {"name": "disk_bytes", "in": "query", "schema": {"type": "string"},
                               "description": "the disk size the ramdisk found, in bytes"}],
        "security": [{"nodeToken": []}],
        "responses": {"200": _text("POSIX sh script"), "400": _text("disk_bytes not a number"),
                      "409": _text("the disk is too small: the node fails"), **_IMAGE_NODE}}},
    "/deploy/{hostname}/node.sh": {"get": {
        "summary": "identity and boot-loader script (sh node.sh identity|bootloader|unmount)",
        "parameters": [_HOST], "security": [{"nodeToken": []}],
        "responses": {"200": _text("POSIX sh script"), **_IMAGE_NODE}}},
    "/deploy/{hostname}/root.tar.zst": {"get": {
        "summary": "the root image of the node's OS and role",
        "parameters": [_HOST], "security": [{"nodeToken": []}],
        "responses": {**_ASSET_RESPONSES, **_IMAGE_NODE}}},
    "/deploy/{hostname}/report": {"post": {
        "summary": "one deploy phase started, done or failed (failed fails the node)",
        "parameters": [_HOST,
                       {"name": "phase", "in": "query", "required": True, "schema": {"type": "string"}},
                       {"name": "status", "in": "query", "required": True,
                        "schema": {"type": "string", "enum": ["started", "done", "failed"]}},
                       {"name": "uptime", "in": "query", "schema": {"type": "string"}}],
        "security": [{"nodeToken": []}],
        "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}},
        "responses": {"200": _text("the node's state after the report"),
                      "400": _text("bad phase or status"), **_IMAGE_NODE}}},
}

SCHEMAS: dict[str, Any] = {
    "State": {"type": "string", "enum": ["new", "powering-on", "pxe", "installing", "installed",
                                         "configuring", "ready", "failed"]},
    "DoctorReport": {
        "type": "object", "required": ["status", "counts", "results"],
        "properties": {
            "status": {"enum": ["ok", "warn", "fail"]},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "results": {"type": "array", "items": {
                "type": "object", "required": ["check", "status", "message", "fix", "subject"],
                "properties": {"check": {"type": "string"}, "status": {"enum": ["ok", "warn", "fail"]},
                               "message": {"type": "string"}, "fix": {"type": "string"},
                               "subject": {"type": "string", "description": "a node, port, interface, zone"}}}},
        },
    },
    "Error": {"type": "object", "required": ["error", "detail"],
              "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
    "Event": {
        "type": "object", "required": ["id", "ts", "host", "kind", "source", "detail"],
        "properties": {
            "id": {"type": "integer"}, "ts": {"type": "number", "description": "Unix time"},
            "host": {"type": ["string", "null"]}, "kind": {"type": "string", "examples": ["state:pxe"]},
            "source": {"type": "string", "enum": [str(source) for source in Source]},
            "detail": {"type": "object"},
        },
    },
    "Node": {
        "type": "object",
        "required": ["hostname", "mac", "ip", "role", "os", "firmware", "state", "state_since",
                     "age_seconds", "netboot", "reason", "last_event"],
        "properties": {
            "hostname": {"type": "string"}, "mac": {"type": "string"}, "ip": {"type": "string"},
            "role": {"type": "string", "enum": ["controller", "compute"]},
            "os": {"type": "string"}, "firmware": {"type": "string", "enum": ["bios", "uefi"]},
            "state": {"$ref": "#/components/schemas/State"},
            "state_since": {"type": "number"}, "age_seconds": {"type": "number"},
            "netboot": {"type": "boolean"}, "reason": {"type": ["string", "null"]},
            "last_event": {"oneOf": [{"$ref": "#/components/schemas/Event"}, {"type": "null"}]},
            "agent": {"$ref": "#/components/schemas/AgentProgress"},
        },
    },
}


def document() -> dict[str, Any]:
    """The whole document (a fresh dict each call, so callers may change it)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "provisiond", "version": __version__,
                 "description": "PXE boot scripts, installer answers and callbacks, node state."},
        "components": {
            "schemas": {**SCHEMAS, **agent_openapi.SCHEMAS},
            "securitySchemes": {
                "nodeToken": {"type": "http", "scheme": "bearer",
                              "description": "the node's token from its own kickstart/preseed"},
                "operatorToken": {"type": "http", "scheme": "bearer",
                                  "description": "contents of <state-dir>/operator.token"},
                **agent_openapi.SECURITY,
            },
        },
        "paths": {
            "/api/openapi.json": {"get": {"summary": "this document",
                                          "responses": {"200": {"description": "OpenAPI 3.1",
                                                                "content": {"application/json": {}}}}}},
            "/api/v1/health": {"get": {"summary": "liveness", "responses": {"200": {
                "description": "serving", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"const": "ok"}, "schema": {"type": "integer"},
                                   "instance": {"type": "string"}}}}}}}}},
            "/api/v1/nodes": {"get": {"summary": "all nodes with state and last event",
                                      "responses": {"200": {"description": "nodes", "content": {
                                          "application/json": {"schema": {
                                              "type": "object", "required": ["nodes"],
                                              "properties": {"nodes": {"type": "array", "items": {
                                                  "$ref": "#/components/schemas/Node"}}}}}}}}}},
            "/api/v1/nodes/{hostname}": {"get": {
                "summary": "one node", "parameters": [_HOST],
                "responses": {"200": {"description": "the node", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Node"}}}},
                    "404": _error("not in the inventory")}}},
            "/api/v1/nodes/{hostname}/events": {"post": {
                "summary": "installer callback (install-started, install-finished)",
                "description": "install-finished turns netboot off: the next PXE boot is local.",
                "parameters": [_HOST], "security": [{"nodeToken": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["event"],
                    "properties": {"event": {"type": "string",
                                             "enum": ["install-started", "install-finished"]}}}}}},
                "responses": {"200": _NODE_STATE, "400": _error("bad body"),
                              "401": _error("no token"),
                              "403": _error("another node's or a stale token"),
                              "404": _error("not in the inventory"),
                              "409": _error("the state machine does not allow it now")}}},
            "/api/v1/nodes/{hostname}/netboot": {"put": {
                "summary": "operator: netboot on (new token, old ones stale) or off",
                "parameters": [_HOST], "security": [{"operatorToken": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["enabled"],
                    "properties": {"enabled": {"type": "boolean"}}}}}},
                "responses": {"200": _NODE_STATE, "400": _error("bad body"),
                              "401": _error("no token"), "403": _error("wrong token"),
                              "404": _error("not in the inventory")}}},
            "/api/v1/doctor": {"get": {
                "summary": "operator: the preflight report (as `provisiond doctor --json`)",
                "security": [{"operatorToken": []}],
                "responses": {"200": {"description": "every check, ok / warn / fail", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/DoctorReport"}}}},
                    "401": _error("no token"), "403": _error("wrong token")}}},
            "/api/v1/events": {"get": {
                "summary": "events after an id (poll with since=last_id)",
                "parameters": [
                    {"name": "since", "in": "query",
                     "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
                    {"name": "host", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "events, oldest first", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["events", "last_id"],
                        "properties": {"events": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Event"}},
                            "last_id": {"type": "integer"}}}}}},
                    "400": _error("since/limit not an integer in range"),
                    "404": _error("host not in the inventory")}}},
            "/boot/{mac}.ipxe": {"get": {
                "summary": "iPXE script: install while netboot is on, boot local when off",
                "parameters": [{"name": "mac", "in": "path", "required": True,
                                "schema": {"type": "string"},
                                "description": "aa:bb:cc:dd:ee:ff (dashes, upper case accepted)"}],
                "responses": {"200": _text("iPXE script"), "404": _text("unknown MAC")}}},
            "/boot/{name}": {"get": {
                "summary": "boot loader (ipxe.efi, undionly.kpxe, ...)",
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": _ASSET_RESPONSES}},
            "/boot/{os_name}/{name}": {"get": {
                "summary": "installer kernel or initrd of an OS",
                "parameters": [{"name": "os_name", "in": "path", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": _ASSET_RESPONSES}},
            "/ks/{hostname}": {"get": {
                "summary": "the node's kickstart (only to the node itself or the operator)",
                "parameters": [_HOST], "security": [{}, {"operatorToken": []}],
                "responses": {"200": _text("kickstart"), "403": _text("not this node"),
                              "404": _text("unknown node or not a kickstart OS")}}},
            "/preseed/{hostname}": {"get": {
                "summary": "the node's preseed (only to the node itself or the operator)",
                "parameters": [_HOST], "security": [{}, {"operatorToken": []}],
                "responses": {"200": _text("preseed"), "403": _text("not this node"),
                              "404": _text("unknown node or not a preseed OS")}}},
            **DEPLOY_PATHS,
            **agent_openapi.PATHS,
            **web_openapi.PATHS,
        },
    }
