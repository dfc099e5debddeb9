"""packages: install what is missing, with apt-get (debian) or dnf (rhel).

Installed packages are found first (dpkg-query / rpm), so a node whose packages are all there
(a root image, or a test node sharing the host's) reports ok and runs no package manager.
"""

from __future__ import annotations

from typing import Any

from agent import system
from agent.steps import Outcome, StepFailed


def installed(name: str, os_family: str) -> bool:
    if os_family == "debian":
        result = system.run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], timeout=60)
        return result.ok and result.stdout.strip() == "installed"
    return system.run(["rpm", "-q", "--whatprovides", name], timeout=60).ok


def install_command(names: list[str], os_family: str) -> list[str]:
    if os_family == "debian":
        return ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                "-o", "Dpkg::Options::=--force-confold", *names]
    if os_family == "rhel":
        return ["dnf", "install", "-y", "-q", *names]
    raise StepFailed(f"no package manager for OS family {os_family!r} (expected debian or rhel)")


def apply(step: dict[str, Any], ctx: Any) -> Outcome:
    if ctx.os_family not in ("debian", "rhel"):
        raise StepFailed(f"no package manager for OS family {ctx.os_family!r} (expected debian or rhel)")
    missing = [name for name in step["names"] if not installed(name, ctx.os_family)]
    if not missing:
        return Outcome(False, f"installed already: {', '.join(step['names'])}")
    command = install_command(missing, ctx.os_family)
    if ctx.dry_run:
        return Outcome(True, f"would install {', '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"} if ctx.os_family == "debian" else {}
    if ctx.os_family == "debian":
        system.run(["apt-get", "update", "-q"], timeout=900, env=env, check=True, what="apt-get update")
    system.run(command, timeout=3600, env=env, check=True, what=" ".join(command[:2]))
    still = [name for name in missing if not installed(name, ctx.os_family)]
    if still:
        raise StepFailed(f"the package manager succeeded but {', '.join(still)} is not installed")
    return Outcome(True, f"installed {', '.join(missing)}")
