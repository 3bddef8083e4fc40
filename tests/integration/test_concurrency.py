"""Many requests at once against the embedded default (SQLite, local store, one worker): the
server keeps answering, sheds what it cannot take with 503 + Retry-After instead of stalling,
and /isAlive answers throughout.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import httpx
import pytest

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
    """Asks /isAlive every 0.2 s from its own thread while a burst runs; records how long
    each answer took (a failure counts as infinitely long)."""

    def __init__(self, url: str) -> None:
        self.url, self.times = url, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            for _ in range(500):  # bounded: 100 s at most
                if self.stop.is_set():
                    return
                started = time.monotonic()
                try:
                    ok = http.get(f"{self.url}/isAlive").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append(time.monotonic() - started if ok else float("inf"))
                self.stop.wait(0.2)

    def __enter__(self) -> AliveProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


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
    waiting for a thread to close their session; nothing answered for minutes."""
    server, object_id = loaded
    urls = [f"{server.url}/download/{object_id}?offset=0&length=-1"] * 100
    urls += [f"{server.url}/ga4gh/drs/v1/objects/{object_id}"] * 200
    with AliveProbe(server.url) as probe:
        started = time.monotonic()
        answers = burst(urls, timeout=20)
        took = time.monotonic() - started
    failed = [a for a in answers if isinstance(a, Exception)]
    assert not failed, f"{len(failed)} of {len(answers)} got no answer, e.g. {failed[0]!r}"
    for a in answers:
        assert a.status_code == 200 or (a.status_code == 503 and a.headers.get("retry-after")), (
            a.status_code,
            a.text[:200],
        )
    assert sum(a.status_code == 200 for a in answers) >= 150, "most of a short burst is served"
    assert took < 20, f"the burst took {took:.1f} s"
    assert probe.times and max(probe.times) < 2.0, f"/isAlive took up to {max(probe.times)} s"


def test_beyond_the_limit_requests_are_shed_with_503_and_retry_after(tmp_path):
    server = init_server(tmp_path / "data")
    server.start(env={"PYSCORE_MAX_CONCURRENT_REQUESTS": "2", "PYSCORE_QUEUE_TIMEOUT_SECONDS": "0"})
    try:
        object_id = publish_open_file(server)
        with AliveProbe(server.url) as probe:
            answers = burst([f"{server.url}/ga4gh/drs/v1/objects/{object_id}"] * 60, timeout=20)
        assert not [a for a in answers if isinstance(a, Exception)]
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 503}, statuses
        shed = [a for a in answers if a.status_code == 503]
        assert shed, "with two slots and no queue, a burst of 60 sheds some"
        assert statuses.count(200) >= 2
        for a in shed:
            assert int(a.headers["retry-after"]) >= 1
            assert a.json()["status_code"] == 503 and "busy" in a.json()["msg"]  # DRS's shape
        assert probe.times and max(probe.times) < 2.0
    finally:
        server.stop()
