"""A process believes a token it verified for `token_cache_seconds` (5 s by default) without
asking the database: a revoked token is refused within that window, by every process."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api import bearer
from tests.conftest import cli_revoke, cli_token, init_server

WINDOW = 5.0


@pytest.mark.parametrize("seconds", [None, 0])
def test_a_revoked_token_is_refused_within_the_cache_window(tmp_path, seconds):
    """Checked by what each request got, never by how long it took: every process verified
    the token before the revocation, so whatever it believes expires `window` seconds after
    the revocation at the latest, however slow the machine. Within the window a request may
    still be answered from a cache (200) or refused (401); every request after it is
    refused. With no cache (0 s): refused from the first request after the revocation."""
    server = init_server(tmp_path / "data")
    env = {} if seconds is None else {"PYSCORE_TOKEN_CACHE_SECONDS": str(seconds)}
    server.start("--workers", "2", env=env)
    try:
        token_id, secret = cli_token(server.data_dir, "score.READ")
        ping = f"{server.url}/download/ping"

        def status() -> int:  # a new connection each: either worker may answer
            return httpx.get(ping, headers=bearer(secret), timeout=30).status_code

        with httpx.Client(headers=bearer(secret), timeout=30) as http:
            for _ in range(8):  # both workers verify (and keep) it
                assert status() == 200
            cli_revoke(server.data_dir, token_id)
            window_ends = time.monotonic() + (WINDOW if seconds is None else 0.0)
            within: list[int] = []
            for _ in range(1000):  # bounded; ends when the window does
                if time.monotonic() >= window_ends:
                    break
                within.append(status())
                time.sleep(0.2)
            assert set(within) <= {200, 401}, within
            after = [status() for _ in range(8)]
            assert after == [401] * 8, f"accepted after the window: {after}; within: {within}"
            assert http.get(ping).status_code == 401
    finally:
        server.stop()
