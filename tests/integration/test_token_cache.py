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
    server = init_server(tmp_path / "data")
    env = {} if seconds is None else {"PYSCORE_TOKEN_CACHE_SECONDS": str(seconds)}
    server.start("--workers", "2", env=env)
    try:
        token_id, secret = cli_token(server.data_dir, "score.READ")
        ping = f"{server.url}/download/ping"
        with httpx.Client(headers=bearer(secret), timeout=10) as http:
            for _ in range(8):  # new connections: both workers verify (and keep) it
                assert httpx.get(ping, headers=bearer(secret)).status_code == 200
            cli_revoke(server.data_dir, token_id)
            revoked = time.monotonic()
            window = WINDOW if seconds is None else 0.0
            refused_after = None
            while time.monotonic() - revoked < window + 2.0:
                statuses = {httpx.get(ping, headers=bearer(secret)).status_code for _ in range(4)}
                if statuses == {401}:
                    refused_after = time.monotonic() - revoked
                    break
                assert statuses <= {200, 401}
                time.sleep(0.2)
            assert refused_after is not None, "still accepted past the window"
            assert refused_after <= window + 1.0
            assert http.get(ping).status_code == 401
    finally:
        server.stop()
