"""`provisiond lab`: the virtual lab (filled by the lab issue)."""

from __future__ import annotations

import argparse

LAB_PLAN = """\
provisiond lab: not built yet.

Once the lab lands, this command will, on this one machine:
  1. create an isolated bridge without uplink (no route to any real network),
  2. start provisiond on it (DHCP, TFTP, HTTP) with the embedded default inventory:
     one controller and compute nodes, each a QEMU virtual machine with a virtual BMC,
  3. power every node on over IPMI with a one-time PXE boot,
  4. let each node PXE boot, install from its rendered kickstart/preseed and run the agent,
  5. show every node's progress until all are ready (or say which failed and why),
  6. remove the bridge, the VMs and the BMCs it created when you stop it.

What works today: `provisiond --inventory FILE check` and
`provisiond --inventory FILE render kickstart|preseed HOST`.
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("lab", help="run the virtual PXE lab (not built yet)")
    parser.set_defaults(func=run_lab)


def run_lab(args: argparse.Namespace) -> int:
    print(LAB_PLAN, end="")
    return 2
