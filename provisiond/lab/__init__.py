"""The virtual lab: virtual BMCs (and, later, QEMU machines) on one machine."""
