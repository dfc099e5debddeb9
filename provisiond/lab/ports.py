"""Free loopback UDP ports for virtual BMCs (tests, benchmarks and the lab)."""

from __future__ import annotations

import random
import socket


def free_udp_ports(count: int, address: str = "127.0.0.1") -> int:
    """First of `count` consecutive UDP ports free on `address` (checked by binding them)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((address, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free UDP ports on {address}")
