"""Service managers: systemd (every installed node), or a direct runner of the unit's command.

The direct runner is for nodes without an init system (containers and test nodes that share a
kernel and have no systemd): it reads the service's systemd unit (ExecStart, Type, PIDFile,
Environment, EnvironmentFile), runs the command itself and tracks the process by its pid
file. "Enabled" is then a note in the agent's journal, since nothing would start it at boot.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from typing import Any

from agent import system
from agent.steps import StepFailed

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def alive(pid: int) -> bool:
    """Running (a zombie is not: our own exited child is reaped here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def pick(name: str, journal: Any) -> Any:
    """`auto` picks systemd when it runs as the init system, else the direct runner."""
    if name == "systemd" or (name == "auto" and os.path.isdir("/run/systemd/system")):
        return Systemd()
    if name in ("direct", "auto"):
        return DirectRunner(journal)
    raise ValueError(f"unknown service manager {name!r} (expected auto, systemd or direct)")


class Systemd:
    name = "systemd"

    def is_enabled(self, service: str) -> bool:
        return system.run(["systemctl", "is-enabled", service], timeout=60).stdout.strip() in ("enabled", "static")

    def is_active(self, service: str) -> bool:
        return system.run(["systemctl", "is-active", "--quiet", service], timeout=60).ok

    def _do(self, verb: str, service: str) -> None:
        result = system.run(["systemctl", verb, service], timeout=600)
        if not result.ok:
            journal = system.run(["journalctl", "-u", service, "-n", "20", "--no-pager"], timeout=60)
            raise StepFailed(f"systemctl {verb} {service}: exit status {result.returncode}",
                             system.tail(result.stderr + "\n" + journal.stdout))

    def enable(self, service: str) -> None:
        self._do("enable", service)

    def disable(self, service: str) -> None:
        self._do("disable", service)

    def start(self, service: str) -> None:
        self._do("start", service)

    def stop(self, service: str) -> None:
        self._do("stop", service)

    def restart(self, service: str) -> None:
        self._do("restart", service)


def parse_unit(text: str) -> dict[str, list[str]]:
    """The [Service] section's settings (a key may repeat); continuation lines joined."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def environment(settings: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in settings.get("Environment", []):
        for word in shlex.split(value):
            key, _, item = word.partition("=")
            env[key] = item
    for value in settings.get("EnvironmentFile", []):
        optional = value.startswith("-")
        path = value.lstrip("-")
        if not os.path.exists(path):
            if optional:
                continue
            raise StepFailed(f"EnvironmentFile {path} is missing")
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, item = line.partition("=")
                    words = shlex.split(item)
                    env[key.strip()] = words[0] if len(words) == 1 else " ".join(words)
    return env


def command_line(exec_start: str, env: dict[str, str]) -> list[str]:
    """systemd's rules, the part units use: `$VAR` alone splits into words, `${VAR}` stays one."""
    argv: list[str] = []
    for word in shlex.split(exec_start.lstrip("-@+!:")):
        bare = re.fullmatch(r"\$(\w+)", word)
        if bare:
            argv += env.get(bare.group(1), "").split()
        else:
            argv.append(_VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return argv


class DirectRunner:
    name = "direct"

    def __init__(self, journal: Any, unit_dirs: tuple[str, ...] = UNIT_DIRS) -> None:
        self.journal = journal
        self.unit_dirs = unit_dirs

    def _unit(self, service: str) -> dict[str, list[str]]:
        for directory in self.unit_dirs:
            path = os.path.join(directory, f"{service}.service")
            if os.path.exists(path):
                with open(path) as handle:
                    return parse_unit(handle.read())
        raise StepFailed(f"no unit file for {service} in {', '.join(self.unit_dirs)} (is its package installed?)")

    def _pid(self, service: str) -> int | None:
        settings = self._unit(service)
        pid: int | None = None
        pid_file = (settings.get("PIDFile") or [None])[-1]
        if pid_file and os.path.exists(pid_file):
            with open(pid_file) as handle:
                text = handle.read().strip()
            pid = int(text) if text.isdigit() else None
        if pid is None:
            pid = self.journal.get("direct_pids", {}).get(service)
        return pid if pid is not None and alive(pid) else None

    def is_enabled(self, service: str) -> bool:
        return service in self.journal.get("enabled_units", [])

    def is_active(self, service: str) -> bool:
        return self._pid(service) is not None

    def enable(self, service: str) -> None:
        self._unit(service)
        self.journal.set("enabled_units", sorted({*self.journal.get("enabled_units", []), service}))

    def disable(self, service: str) -> None:
        self.journal.set("enabled_units", [u for u in self.journal.get("enabled_units", []) if u != service])

    def start(self, service: str) -> None:
        settings = self._unit(service)
        if not settings.get("ExecStart"):
            raise StepFailed(f"the unit of {service} has no ExecStart")
        argv = command_line(settings["ExecStart"][-1], environment(settings))
        kind = (settings.get("Type") or ["simple"])[-1]
        with tempfile.TemporaryFile("w+") as output:
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                           start_new_session=True, env=dict(os.environ, **environment(settings)))
            except OSError as exc:
                raise StepFailed(f"cannot start {service} ({argv[0]}): {exc.strerror}") from None
            if kind == "forking":
                try:
                    code = process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    raise StepFailed(f"{service}: {argv[0]} did not fork within 90 s") from None
                if code != 0:
                    output.seek(0)
                    raise StepFailed(f"{service}: {' '.join(argv)} exited with status {code}",
                                     system.tail(output.read()))
            else:
                time.sleep(0.5)
                if process.poll() is not None:
                    output.seek(0)
                    raise StepFailed(f"{service}: {' '.join(argv)} exited at once with status "
                                     f"{process.returncode}", system.tail(output.read()))
                self.journal.set("direct_pids", {**self.journal.get("direct_pids", {}), service: process.pid})
        for _ in range(100):
            if self.is_active(service):
                return
            time.sleep(0.1)
        raise StepFailed(f"{service} started but no process is running (pid file "
                         f"{(settings.get('PIDFile') or ['none'])[-1]})")

    def stop(self, service: str) -> None:
        pid = self._pid(service)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if self._pid(service) is None:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def restart(self, service: str) -> None:
        self.stop(service)
        self.start(service)
