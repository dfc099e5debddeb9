"""`doctor [--interface IFACE] [--json]`: the preflight report (docs/doctor.md).

Exit 0 when no check fails (warnings allowed), 1 when one does.
"""

from __future__ import annotations

import argparse
import json

from provisiond.config import effective_config
from provisiond.doctor.checks import Report, Status
from provisiond.doctor.run import CHECKS, DoctorOptions, run_doctor
from provisiond.errors import UserError
from provisiond.power import PowerConfig


def register(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser(
        "doctor", help="preflight: everything that will go wrong before nodes power on",
        description="Check the inventory, the interface, the ports, another DHCP server on the "
        "segment, boot assets, every node's answer file, every BMC and the DNS server. "
        "Exit 1 if any check fails.",
    )
    doctor.add_argument("--interface", action="append", default=None, metavar="IFACE",
                        help="the provisioning interface (repeatable; default: serve.interfaces)")
    doctor.add_argument("--json", action="store_true", help="the report as JSON")
    doctor.add_argument("--probe-seconds", type=float, default=DoctorOptions.probe_seconds, metavar="S",
                        help=f"how long to listen for DHCP offers (default {DoctorOptions.probe_seconds:g})")
    doctor.add_argument("--bmc-timeout", type=float, default=5.0, metavar="S",
                        help="bound on each BMC's answer (default 5)")
    doctor.add_argument("--skip", action="append", default=[], choices=CHECKS, help="leave a check out")
    doctor.set_defaults(func=run)


def options_from(probe_seconds: float, bmc_timeout: float, skip: list[str]) -> DoctorOptions:
    if probe_seconds <= 0 or bmc_timeout <= 0:
        raise UserError("--probe-seconds and --bmc-timeout must be positive")
    return DoctorOptions(probe_seconds=probe_seconds, power=PowerConfig(timeout=bmc_timeout, retries=0),
                         skip=frozenset(skip))


def format_report(report: Report) -> str:
    lines = []
    for result in report.results:
        subject = f" [{result.subject}]" if result.subject else ""
        lines.append(f"{result.status.value.upper():4}  {result.check}{subject}: {result.message}")
        if result.fix and result.status is not Status.OK:
            lines.append(f"      -> {result.fix}")
    counts = report.json()["counts"]
    lines.append(f"{report.status.value}: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = effective_config(args)
    if args.interface:
        config = config.with_overrides(interfaces=tuple(args.interface))
    report = run_doctor(config, options_from(args.probe_seconds, args.bmc_timeout, args.skip))
    print(json.dumps(report.json(), indent=2) if args.json else format_report(report))
    return report.exit_code
