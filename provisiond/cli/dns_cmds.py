"""`dns sync [--dry-run] [--json]`: make the site's zones hold the inventory's A and PTR records.

Reads the zones (signed AXFR), prints every change (and with --dry-run stops there), sends one
signed RFC 2136 update per change. Exit 0 when every update was accepted (a dry run: when the
zones could be read), 1 otherwise; a failed update is also an event of its node.
"""

from __future__ import annotations

import argparse
import json

from provisiond import nodes
from provisiond.config import effective_config
from provisiond.errors import UserError
from provisiond.inventory import load_inventory


def register(commands: argparse._SubParsersAction) -> None:
    dns = commands.add_parser("dns", help="publish the nodes' names (A/PTR) by RFC 2136 update")
    actions = dns.add_subparsers(dest="dns_command", metavar="ACTION", required=True)
    sync = actions.add_parser(
        "sync", help="reconcile the site's zones with the inventory",
        description="Add, update and remove the nodes' A and PTR records so the zones match the "
        "inventory (names provisiond did not create are left alone). Exit 1 if an update failed.",
    )
    sync.add_argument("--dry-run", action="store_true", help="show the changes, send nothing")
    sync.add_argument("--json", action="store_true", help="the report as JSON")
    sync.set_defaults(func=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    from provisiond.dns import publish  # dnspython's query stack is slow to import: only here
    from provisiond.dns.client import DnsError

    config = effective_config(args)
    inventory = load_inventory(config.inventory)
    store = None if args.dry_run else nodes.open_store(config.state_dir, inventory)
    try:
        report = publish.sync(inventory, dry_run=args.dry_run, store=store)
    except DnsError as exc:
        raise UserError(f"nothing changed: {exc}") from None
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(report.json(), indent=2))
        return 0 if report.ok else 1
    for problem in report.plan.problems:
        print(f"warning: {problem}")
    for conflict in report.plan.conflicts:
        print(f"conflict: {conflict}")
    if args.dry_run:
        for change in report.plan.changes:
            print(f"would {change.describe()}")
        print(f"{len(report.plan.changes)} change(s) planned, none sent (--dry-run)")
        return 0
    for outcome in report.outcomes:
        print(outcome.change.describe() + (f": FAILED: {outcome.error}" if outcome.error else ""))
    failed = sum(1 for outcome in report.outcomes if outcome.error)
    print(f"{len(report.outcomes) - failed} change(s) made, {failed} failed"
          if report.outcomes else "in sync: nothing to change")
    return 0 if report.ok else 1
