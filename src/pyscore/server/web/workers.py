"""Server worker processes end with the server that started them."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

SERVER_PID = "PYSCORE_SERVER_PID"  # set by `score-server serve` for the workers it starts


def end_with_parent(interval: float = 0.5, grace: float = 5.0) -> None:
    """Make this worker process end when the process that started it does, even by
    `kill -9` (which gives the parent no chance to stop its workers): a daemon thread
    watches for the worker being handed to another parent, then asks it to stop (SIGTERM,
    so requests in flight finish) and, after `grace` seconds, ends it. The server's pid comes
    from the environment, so a worker whose server died before it started stops too.
    The end is SIGALRM's default action, taken by the kernel: granian 2.5 (Python 3.9) can
    deadlock stopping a worker while holding the GIL, and then no thread of ours runs again."""
    parent = int(os.environ.get(SERVER_PID) or os.getppid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        print(
            f"pyscore worker {os.getpid()}: its server process {parent} is gone; stopping",
            file=sys.stderr,
            flush=True,
        )
        if signal.getsignal(signal.SIGALRM) == signal.SIG_DFL:
            signal.alarm(max(1, round(grace)))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
