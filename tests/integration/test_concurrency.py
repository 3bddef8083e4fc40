"""Many requests at once against the embedded default (SQLite, local store, one worker): the
server keeps answering, sheds what it cannot take with 503 + Retry-After instead of stalling,
and /isAlive answers throughout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import httpx
import pytest

from pyscore.server.settings import Settings
from tests.api import bearer, submit, upload
from tests.conftest import init_server
from tests.publish import song_payload

STUDY = "LOAD"


def publish_open_file(server) -> str:
    with httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=30) as h:
        assert h.post(f"/studies/{STUDY}/", json={"studyId": STUDY}).status_code == 200
        data = {"open.bam": os.urandom(4096)}
        aid, ids = submit(h, song_payload(STUDY, data, access="open"))
        upload(h, ids["open.bam"], data["open.bam"])
        assert h.put(f"/studies/{STUDY}/analysis/publish/{aid}").status_code == 200
    return ids["open.bam"]


class AliveProbe:
    """Asks /isAlive every 0.2 s from its own thread while a burst runs; records whether
    each was answered 200 (within a bound only a stall reaches, not a time limit)."""

    def __init__(self, url: str) -> None:
        self.url, self.answers = url, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=60) as http:
            for _ in range(500):  # bounded
                if self.stop.is_set():
                    return
                try:
                    ok = http.get(f"{self.url}/isAlive").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.answers.append(ok)
                self.stop.wait(0.2)

    def __enter__(self) -> AliveProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(90)


def burst(urls: list[str], timeout: float) -> list[httpx.Response | Exception]:
    """Every URL at once, each on a connection of its own."""

    async def run() -> list[httpx.Response | Exception]:
        limits = httpx.Limits(max_connections=len(urls))
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:

            async def one(url: str) -> httpx.Response | Exception:
                try:
                    return await http.get(url)
                except httpx.HTTPError as exc:
                    return exc

            return await asyncio.gather(*(one(u) for u in urls))

    return asyncio.run(run())


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    with init_server(tmp_path_factory.mktemp("load") / "data") as server:
        yield server, publish_open_file(server)


def test_hundreds_of_parallel_downloads_and_drs_calls_do_not_stall(loaded):
    """Before: 40 worker threads waited for the 15 pooled connections, held by requests
    waiting for a thread to close their session; nothing answered for minutes (or, after
    the pool's timeout, 500). Now every request is answered: served, or (once it waited
    queue_timeout_seconds for a slot, which a busy machine makes more likely) 503 with
    Retry-After; the first max_concurrent_requests never wait, so at least that many are
    served; /isAlive, asked in the same burst and beside it, is answered every time."""
    server, object_id = loaded
    urls = [f"{server.url}/download/{object_id}?offset=0&length=-1"] * 100
    urls += [f"{server.url}/ga4gh/drs/v1/objects/{object_id}"] * 200
    alive = f"{server.url}/isAlive"
    urls = [u for i, url in enumerate(urls) for u in ((url, alive) if i % 15 == 0 else (url,))]
    with AliveProbe(server.url) as probe:
        answers = burst(urls, timeout=120)  # a bound only a stall reaches
    failed = [a for a in answers if isinstance(a, Exception)]
    assert not failed, f"{len(failed)} of {len(answers)} got no answer, e.g. {failed[0]!r}"
    api = [a for u, a in zip(urls, answers) if u != alive]
    for a in api:
        assert a.status_code == 200 or (a.status_code == 503 and a.headers.get("retry-after")), (
            a.status_code,
            a.text[:200],
        )
    assert sum(a.status_code == 200 for a in api) >= Settings.max_concurrent_requests
    assert [a.status_code for u, a in zip(urls, answers) if u == alive] == [200] * 20
    assert probe.answers and all(probe.answers), probe.answers


def held_requests(server, count: int) -> list[socket.socket]:
    """`count` API requests at work until their sockets close: each has sent its head and
    the first byte of a body it promised 100 bytes of, so each holds an admission slot
    however fast or slow the machine is."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(
            f"POST /studies/HELD/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {server.admin_token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        held.append(sock)
    return held


def status_becomes(url: str, status: int) -> int:
    """Ask `url` until it answers `status` (bounded: a minute); the last status seen."""
    deadline = time.monotonic() + 60
    while (got := httpx.get(url, timeout=30).status_code) != status:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return got


def test_beyond_the_limit_requests_are_shed_with_503_and_retry_after(tmp_path):
    """Both slots are taken by requests that stay at work (not by a burst's luck): every
    request of a burst is shed at once with 503 + Retry-After, /isAlive in the same burst
    is answered; once the two end, requests are served again."""
    server = init_server(tmp_path / "data")
    server.start(env={"PYSCORE_MAX_CONCURRENT_REQUESTS": "2", "PYSCORE_QUEUE_TIMEOUT_SECONDS": "0"})
    try:
        object_id = publish_open_file(server)
        drs = f"{server.url}/ga4gh/drs/v1/objects/{object_id}"
        assert httpx.get(drs, timeout=30).status_code == 200
        held = held_requests(server, 2)
        try:
            assert status_becomes(drs, 503) == 503, "two requests at work did not fill 2 slots"
            alive = f"{server.url}/isAlive"
            with AliveProbe(server.url) as probe:
                answers = burst([drs] * 60 + [alive] * 5, timeout=120)
            assert not [a for a in answers if isinstance(a, Exception)]
            shed, alive_answers = answers[:60], answers[60:]
            assert [a.status_code for a in shed] == [503] * 60
            for a in shed:
                assert int(a.headers["retry-after"]) >= 1
                assert a.json()["status_code"] == 503 and "busy" in a.json()["msg"]  # DRS shape
            assert [a.status_code for a in alive_answers] == [200] * 5
            assert probe.answers and all(probe.answers), probe.answers
        finally:
            for sock in held:
                sock.close()
        assert status_becomes(drs, 200) == 200, "the slots did not come back"
    finally:
        server.stop()
