"""Structured logs: one line per event, `key=value` pairs, secrets masked.

    ts=2026-11-21T02:10:00.123Z level=info logger=provisiond.http event=callback host=node1 ...

Call `log_event(logger, "callback", host=..., status=...)` for a machine-readable line. The
masking filter runs on every record (also other libraries' and waitress's), so a token that
slips into a message or an argument is replaced by `***` before it is written.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

# Node tokens are 64 hex digits (HMAC-SHA256); operator tokens are urlsafe base64 of 32 bytes.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)\S+"),
    re.compile(r"(?i)((?:token|password|secret|authorization)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"),
    re.compile(r"()\b[0-9a-f]{64}\b"),
)


def mask_secrets(text: str) -> str:
    """Replace anything that looks like a token or password with ***."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


# C0 and C1 controls and DEL: a request path or a client's name can carry ESC, NUL or CR,
# which would forge or garble log lines on a terminal or in a file.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    return _CONTROL_NAMES.get(char, f"\\x{ord(char):02x}")


def _quote(value: Any) -> str:
    """A value as one token: quoted when it has spaces, quotes or '=', control characters
    always escaped (\\n, \\x1b), so one event stays one line whatever a client sent."""
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=') or _CONTROL.search(text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        text = '"' + _CONTROL.sub(_escape_control, escaped) + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """ts=... level=... logger=... event=... k=v msg="..." on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={stamp}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}"]
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        if "event" in fields:
            parts.append(f"event={_quote(fields['event'])}")
        parts += [f"{key}={_quote(value)}" for key, value in fields.items() if key != "event"]
        message = record.getMessage()
        if message:
            parts.append(f"msg={_quote(message)}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return mask_secrets(" ".join(parts))


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as structured fields (values are masked like everything else)."""
    logger.log(level, "", extra={"fields": {"event": event, **fields}})


def setup_logging(verbosity: int = 1, stream: Any = None) -> None:
    """Route every logger through the key=value formatter (level from -v count)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
