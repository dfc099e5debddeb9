"""The OpenAPI description of the status page, /metrics, the discovery list and TFTP
statistics (merged into /api/openapi.json)."""

from __future__ import annotations

from typing import Any


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = {"$ref": "#/components/schemas/Error"}
_HOST = {"name": "hostname", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "node host name as in the inventory"}
_PAGE = [{}, {"operatorToken": []}]  # the login's cookie, or the operator token
_TO_LOGIN = {"description": "not signed in: to /ui/login"}
_SEEN = {"type": "object", "required": ["mac", "first_seen", "last_seen", "count", "detail"],
         "properties": {"mac": {"type": "string"}, "first_seen": {"type": "number"},
                        "last_seen": {"type": "number"}, "count": {"type": "integer"},
                        "detail": {"type": "object", "description": "interface, message, "
                                   "vendor_class, arch, hostname, relay (as the request said)"}}}
_TOTALS = {"type": "object", "required": ["transfers", "bytes", "retransmits"],
           "properties": {"transfers": {"type": "integer"}, "bytes": {"type": "integer"},
                          "retransmits": {"type": "integer"}}}
_TRANSFER = {"type": "object",
             "required": ["ts", "peer", "filename", "bytes", "duration", "retransmits", "options",
                          "outcome"],
             "properties": {"id": {"type": "integer"}, "ts": {"type": "number"},
                            "peer": {"type": "string"}, "filename": {"type": "string"},
                            "bytes": {"type": "integer"}, "duration": {"type": "number"},
                            "retransmits": {"type": "integer"}, "options": {"type": "object"},
                            "outcome": {"type": "string"}}}

PATHS: dict[str, Any] = {
    "/": {"get": {"summary": "to the status page", "responses": {"302": {"description": "/ui/"}}}},
    "/ui/": {"get": {"summary": "status page: every node's state, progress and last event",
                     "security": _PAGE,
                     "responses": {"200": _html("the page"), "303": _TO_LOGIN}}},
    "/ui/nodes/{hostname}": {"get": {
        "summary": "a node: fields, layout check, facts, event timeline", "parameters": [_HOST],
        "security": _PAGE,
        "responses": {"200": _html("the page"), "303": _TO_LOGIN,
                      "404": _text("not in the inventory")}}},
    "/ui/stream": {"get": {
        "summary": "server-sent events: changed rows (`node`, rendered <tr>) and state counts "
                   "(`summary`); ends after 30 s, the browser reconnects",
        "parameters": [{"name": "since", "in": "query", "schema": {"type": "string"},
                        "description": "the page's change marker (or Last-Event-ID)"}],
        "security": _PAGE,
        "responses": {"200": {"description": "the stream (or `retry:` only, when busy)",
                              "content": {"text/event-stream": {"schema": {
                                  "type": "object", "description": "one event",
                                  "properties": {"event": {"enum": ["node", "summary"]},
                                                 "data": {"type": "string"},
                                                 "id": {"type": "string"}}}}}},
                      "401": _text("not signed in")}}},
    "/ui/login": {
        "get": {"summary": "the sign-in form",
                "parameters": [{"name": "next", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _html("the form")}},
        "post": {"summary": "sign in with the operator token (sets the session cookie)",
                 "requestBody": {"required": True, "content": {
                     "application/x-www-form-urlencoded": {"schema": {
                         "type": "object", "required": ["token"],
                         "properties": {"token": {"type": "string"}, "next": {"type": "string"}}}}}},
                 "responses": {"303": {"description": "signed in: to `next` (a path here)"},
                               "403": _html("not the operator token")}}},
    "/ui/logout": {"post": {"summary": "sign out (clears the cookie)",
                            "responses": {"303": {"description": "to /ui/login"}}}},
    "/ui/static/{name}": {"get": {
        "summary": "the page's script and stylesheet",
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "page.js or page.css",
                              "content": {"text/javascript": {}, "text/css": {}}},
                      "404": _text("no such file")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)",
                         "responses": {"200": _text("counters, gauges, histograms")}}},
    "/api/v1/discovered": {"get": {
        "summary": "the discovery list: MACs that asked DHCP but are not in the inventory",
        "responses": {"200": _json("newest first", {
            "type": "object", "required": ["discovered"],
            "properties": {"discovered": {"type": "array", "items": _SEEN}}})}}},
    "/api/v1/tftp/transfers": {"get": {
        "summary": "TFTP statistics: totals per outcome and the last transfers",
        "parameters": [{"name": "limit", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
        "responses": {"200": _json("newest first", {
            "type": "object", "required": ["transfers", "totals"],
            "properties": {"transfers": {"type": "array", "items": _TRANSFER},
                           "totals": {"type": "object", "additionalProperties": _TOTALS}}}),
            "400": {"description": "limit out of range",
                    "content": {"application/json": {"schema": _ERROR}}}}}},
}
