"""A TCP proxy on loopback in front of a database or servers, that tests can take away:
`down()` cuts every connection and refuses new ones as a stopped or restarting server does,
`up()` lets them through again, and `cut_on(pattern)` drops the one connection that sends
`pattern` (PostgreSQL's protocol carries statements as plain text) before it reaches the
server, so a transaction ends at an exact statement as when its connection is lost. In front
of several servers it balances: each connection goes to the next that accepts it, so a
killed server's share moves to the others (bench/chaos.py)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, *upstream_ports: int) -> None:
        self.upstreams = upstream_ports
        self.turn = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.live: set[socket.socket] = set()
        self.refusing = False
        self.pattern = b""
        self.cuts = 0  # connections dropped by cut_on
        self.refused = 0  # connections refused while down
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        """Drop every connection and refuse new ones (each is closed once accepted)."""
        with self.lock:
            self.refusing = True
            doomed = list(self.live)
        for s in doomed:
            self._kill(s)

    def up(self) -> None:
        with self.lock:
            self.refusing = False

    def cut_on(self, pattern: bytes) -> None:
        """Drop the first connection whose client sends `pattern` (the chunk holding it is
        not forwarded), once."""
        with self.lock:
            self.pattern = pattern

    def close(self) -> None:
        self.closed = True
        self.down()
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                refuse = self.refusing
                if refuse:
                    self.refused += 1
            if refuse:
                self._kill(client)
                continue
            server = self._connect()
            if server is None:
                self._kill(client)
                continue
            with self.lock:
                self.live.update((client, server))
            pair = (client, server)
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, pair, up), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        """A connection to the next upstream that takes one (round robin)."""
        self.turn += 1
        for n in range(len(self.upstreams)):
            port = self.upstreams[(self.turn + n) % len(self.upstreams)]
            try:
                server = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                continue
            server.settimeout(None)
            return server
        return None

    def _pump(
        self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, ...], up: bool
    ) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if up and self.pattern and self.pattern in data:
                    with self.lock:
                        hit, self.pattern = bool(self.pattern), b""
                        self.cuts += hit
                    if hit:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in pair:
            self._kill(s)

    def _kill(self, s: socket.socket) -> None:
        """Close with a reset (SO_LINGER 0), as a connection to a killed server ends; a
        thread reading it wakes (shutdown: a close alone would leave it blocked)."""
        with self.lock:
            self.live.discard(s)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RD)
        with contextlib.suppress(OSError):
            s.close()
