"""A platform behind an emulated long-distance link (tests/wanlink.py), for tests that count
what crosses it. Import the fixture into a test module:

    from tests.wan_fixtures import wan_server  # noqa: F401

    def test_x(wan_server):
        server = wan_server(rtt_ms=50)      # a Server whose url is the link's
        server.client("download", ...)      # METADATA_URL = STORAGE_URL = the link
        server.link.stats().requests        # what crossed it (WanLink.stats())

The server's public URL is the link's, so the signed data URLs it hands out cross the link
too (with the local store; an S3 store's URLs point at S3 and do not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, free_port, init_server
from tests.wanlink import MiB, WanLink


def start_wan_server(
    data_dir: Path,
    rtt_ms: float = 100.0,
    window: int = 4 * MiB,
    rate: float = 125_000_000,
    **link_args: Any,
) -> tuple[Server, WanLink]:
    """init + serve a platform on a free port with a link in front of it; the Server's url
    (and public URL) is the link's, and `server.link` is the link. Stop both when done."""
    port = free_port()
    link = WanLink(port, rtt_ms=rtt_ms, window=window, rate=rate, **link_args)
    try:
        server = init_server(data_dir, "--public-url", link.url)
        server.port = port
        server.start()  # waits for /isAlive on the direct URL
    except BaseException:
        link.close()
        raise
    server.url = link.url
    server.link = link  # type: ignore[attr-defined]
    return server, link


@pytest.fixture
def wan_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory: wan_server(rtt_ms=100, window=4 MiB, rate=125e6 bytes/s, **WanLink args)
    -> an empty platform of the test's own behind a fresh link (see start_wan_server)."""
    made: list[tuple[Server, WanLink]] = []

    def make(rtt_ms: float = 100.0, **link_args: Any) -> Server:
        server, link = start_wan_server(tmp_path / f"wan{len(made)}", rtt_ms, **link_args)
        made.append((server, link))
        return server

    yield make
    for server, link in made:
        server.stop()
        link.close()
