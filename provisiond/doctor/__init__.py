"""`provisiond doctor`: one preflight report, every check ok / warn / fail with what to do.

checks: the results and the pure rules that turn gathered facts into them (no I/O).
assets: which Debian package provides each boot asset (pure).
probe: the rogue-DHCP probe (a DISCOVER from a probe MAC, every offer collected).
run: gathers the facts (inventory, pyroute2, /proc, the probe, the power fan-out, DNS) and
builds the report; the CLI and the API call it.
"""
