"""provisiond: bare-metal provisioning server (IPMI, DHCP, TFTP, HTTP) with a post-install agent."""

__version__ = "0.1.0"
