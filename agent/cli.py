"""`provisiond-agent`: the node-side agent's entry point."""

from __future__ import annotations

import argparse
import sys

from agent import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="provisiond-agent",
        description="Fetches this node's role manifest from provisiond and runs its steps.",
    )
    parser.add_argument("--version", action="version", version=f"provisiond-agent {__version__}")
    parser.parse_args(argv)
    print(
        "provisiond-agent: the agent's steps (manifest, GlusterFS, OpenStack) are not built yet;"
        " they arrive with the agent issue.",
        file=sys.stderr,
    )
    return 2
