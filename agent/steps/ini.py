"""ini: one `option = value` in one section, every other line (comments too) kept as it was."""

from __future__ import annotations

import os
import re
from typing import Any

from agent.steps import Outcome, StepFailed
from agent.steps.file import write_atomically

SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def set_option(text: str, section: str, option: str, value: str) -> str:
    """The text with `option = value` in `section` ("" = before the first section header).

    The first line setting the option is rewritten, later duplicates in the section dropped;
    a missing option goes after the section's last setting; a missing section is appended.
    """
    lines = text.splitlines()
    wanted = f"{option} = {value}"
    setting = re.compile(r"^\s*" + re.escape(option) + r"\s*[=:]")
    start = 0 if section == "" else None
    end = len(lines)
    for number, line in enumerate(lines):
        match = SECTION.match(line)
        if not match:
            continue
        if start is not None and number >= start:
            end = number
            break
        if match.group(1).strip() == section:
            start = number + 1
    if start is None:
        block = ([""] if lines and lines[-1].strip() else []) + [f"[{section}]", wanted]
        return "\n".join(lines + block) + "\n"
    found = [number for number in range(start, end) if setting.match(lines[number])]
    if found:
        lines[found[0]] = wanted
        for number in reversed(found[1:]):
            del lines[number]
    else:
        insert = start
        for number in range(start, end):
            if lines[number].strip() and not lines[number].lstrip().startswith(("#", ";")):
                insert = number + 1
        lines.insert(insert, wanted)
    return "\n".join(lines) + "\n"


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    path = step["path"]
    if os.path.isdir(path):
        raise StepFailed(f"{path} is a directory, not an ini file")
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            old = handle.read()
    new = set_option(old, step["section"], step["option"], step["value"])
    where = f"{path} [{step['section'] or 'top'}] {step['option']}"
    if new == old:
        return Outcome(False, f"{where} is set")
    if ctx.dry_run:
        return Outcome(True, f"would set {where}")
    mode = step.get("mode") if not os.path.exists(path) else None
    write_atomically(path, new.encode("utf-8", "surrogateescape"), mode, -1, -1)
    ctx.journal.mark_changed(path)
    return Outcome(True, f"set {where}")

