"""A virtual BMC whose machine is busy for its first N requests (for the retry tests).

Usage: python busy_vbmc.py PORT PASSWORD_FILE N
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from provisiond.lab.vbmc import MachineBusy, MemoryMachine, VirtualBmc, serve


class BusyMachine(MemoryMachine):
    """Raises MachineBusy for the first `busy` power queries, then behaves."""

    def __init__(self, busy: int) -> None:
        super().__init__("busy", on_change=lambda m: print(m, flush=True))
        self.busy = busy

    def get_power(self) -> bool:
        if self.busy > 0:
            self.busy -= 1
            print("answered busy", flush=True)
            raise MachineBusy
        return super().get_power()


def main() -> None:
    port, password_file, busy = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    password = password_file.read_text().splitlines()[0]
    VirtualBmc(BusyMachine(busy), username="admin", password=password, port=port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"listening on {port}", flush=True)
    serve(stop)


if __name__ == "__main__":
    main()
