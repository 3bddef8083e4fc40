"""Server worker processes end with the server that started them."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def end_with_parent(interval: float = 0.5, grace: float = 5.0) -> None:
    """Make this worker process end when the process that started it does, even by
    `kill -9` (which gives the parent no chance to stop its workers): a daemon thread
    watches for the worker being handed to another parent, then asks it to stop (SIGTERM,
    so requests in flight finish) and, after `grace` seconds, ends it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        print(
            f"pyscore worker {os.getpid()}: its server process {parent} is gone; stopping",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
