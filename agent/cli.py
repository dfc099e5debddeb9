"""`provisiond-agent`: fetch this node's manifest from provisiond and run its steps.

Settings come from /etc/provisiond/agent.conf (`key=value` lines: server_url, hostname,
credential_file, state_dir, service_manager), written by the installer; options override it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from agent import __version__
from agent.client import Client, ServerError
from agent.context import StepContext
from agent.journal import Journal
from agent.runner import Runner
from agent.services import pick

DEFAULTS = {
    "server_url": "",
    "hostname": "",
    "credential_file": "/etc/provisiond/agent.credential",
    "state_dir": "/var/lib/provisiond-agent",
    "service_manager": "auto",
}
DONE_MARKER = "done"


def read_config(path: str) -> dict[str, str]:
    settings = dict(DEFAULTS)
    if not os.path.exists(path):
        return settings
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or key.strip() not in DEFAULTS:
                raise SystemExit(f"provisiond-agent: {path}:{number}: expected one of "
                                 f"{', '.join(DEFAULTS)} as key=value, got {line!r}")
            settings[key.strip()] = value.strip()
    return settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="provisiond-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"provisiond-agent {__version__}")
    parser.add_argument("--config", default="/etc/provisiond/agent.conf", help="settings file")
    parser.add_argument("--server", help="provisiond's URL (server_url)")
    parser.add_argument("--hostname", help="this node's inventory host name")
    parser.add_argument("--credential-file", help="file holding this node's agent credential")
    parser.add_argument("--state-dir", help="journal directory (default /var/lib/provisiond-agent)")
    parser.add_argument("--service-manager", choices=("auto", "systemd", "direct"),
                        help="auto: systemd when it is the init system, else run units directly")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and what each step would change; change nothing")
    parser.add_argument("--print-manifest", action="store_true", help="print the manifest as JSON and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = read_config(args.config)
    for key, value in (("server_url", args.server), ("hostname", args.hostname),
                       ("credential_file", args.credential_file), ("state_dir", args.state_dir),
                       ("service_manager", args.service_manager)):
        if value:
            settings[key] = value
    missing = [key for key in ("server_url", "hostname") if not settings[key]]
    if missing:
        print(f"provisiond-agent: {', '.join(missing)} not set (in {args.config} or as options)", file=sys.stderr)
        return 2
    try:
        with open(settings["credential_file"]) as handle:
            credential = handle.read().strip()
    except OSError as exc:
        print(f"provisiond-agent: cannot read the agent credential {settings['credential_file']}: "
              f"{exc.strerror}", file=sys.stderr)
        return 2
    client = Client(settings["server_url"], settings["hostname"], credential)
    try:
        manifest = client.manifest()
    except ServerError as exc:
        print(f"provisiond-agent: {exc}", file=sys.stderr)
        return 1
    if args.print_manifest:
        print(json.dumps(manifest, indent=2))
        return 0
    journal = Journal(settings["state_dir"])
    ctx = StepContext(hostname=settings["hostname"], os_family=manifest["os_family"], journal=journal,
                      client=client, dry_run=args.dry_run,
                      service_manager=pick(settings["service_manager"], journal))
    print(f"provisiond-agent {__version__}: {manifest['hostname']} ({manifest['role']}), "
          f"{len(manifest['steps'])} steps{' (dry run: nothing is changed)' if args.dry_run else ''}",
          flush=True)
    try:
        code = Runner(manifest, ctx, journal, client).run()
    except ServerError as exc:
        print(f"provisiond-agent: {exc}", file=sys.stderr)
        return 1
    if code == 0 and not args.dry_run:
        with open(os.path.join(settings["state_dir"], DONE_MARKER), "w") as handle:
            handle.write("ready\n")
    return code
