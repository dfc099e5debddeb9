"""DNS names for the nodes: A and PTR records published by RFC 2136 dynamic update with TSIG.

settings: the inventory's `site.dns_update` section and the TSIG key file (pure).
records: the record sets the inventory asks for, the zone's current ones, the diff (pure).
client: the I/O (zone transfer, update messages) with dnspython; errors carry the server's rcode.
publish: `provisiond dns sync` and the lifecycle hook that publishes a node once installed.
"""
