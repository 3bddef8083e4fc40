"""One TLS context for every HTTPS connection the client makes, its trust store loaded on the
first TLS handshake.

Loading CA certificates costs ~50 ms per context, which every HTTP client and every download
thread used to pay at start-up, even when all URLs were plain HTTP (loopback, in-cluster
platforms). Trusted: the system's store (and SSL_CERT_FILE / SSL_CERT_DIR) plus certifi's.
"""

from __future__ import annotations

import ssl
import threading
from functools import cache
from typing import Any


class LazyTrust(ssl.SSLContext):
    """A client context that verifies like `ssl.create_default_context()`, loading the CA
    certificates just before the first handshake."""

    _lock = threading.Lock()
    _loaded = False

    def _trust(self) -> None:
        with self._lock:
            if not self._loaded:
                self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                try:
                    import certifi
                except ImportError:  # pragma: no cover - a dependency
                    pass
                else:
                    self.load_verify_locations(cafile=certifi.where())
                self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
        self._trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
        self._trust()
        return super().wrap_bio(*args, **kwargs)


@cache
def context() -> ssl.SSLContext:
    """The shared verifying context (hostname checked, certificates required)."""
    return LazyTrust(ssl.PROTOCOL_TLS_CLIENT)
