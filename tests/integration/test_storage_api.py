"""The Score-compatible storage API over real HTTP: download specifications, signed part URLs,
multipart uploads and listing, against a real score-server with 5 MiB parts.
"""

from __future__ import annotations

import io
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from pyscore.client.api import Api
from pyscore.client.config import DEFAULTS, ClientSettings
from pyscore.client.progress import Reporter
from pyscore.client.upload import Item, Uploader
from pyscore.server.objects import MAX_PARTS
from pyscore.server.tables import Analysis as AnalysisRow
from pyscore.server.tables import Upload
from pyscore.wire.batch import ACCEPT_HEADER, ANSWER_PARTS, UNCUT_PARTS, UploadStartAnswer
from tests.api import bearer, database, mint_tokens, song_error, submit, upload
from tests.conftest import (
    Server,
    database_write_locked,
    init_server,
    local_store_only,
    sqlite_only,
)
from tests.publish import MiB, md5, song_payload

T = TypeVar("T")
PART = 5 * MiB  # the platform is initialised with --part-size 5
BIG = 2 * PART + MiB + 1234  # three parts: 5 MiB, 5 MiB, 1 MiB + 1234
STUDY, OTHER = "STORE", "LST2"


def fetch(part: dict) -> httpx.Response:
    """A part's bytes, asked for with a Range header as score-client does (S3's presigned
    URLs cover the whole object; the local store's are signed for the part's range)."""
    end = part["offset"] + part["partSize"] - 1
    return httpx.get(part["url"], headers={"Range": f"bytes={part['offset']}-{end}"}, timeout=60)


@dataclass
class Analysis:
    analysis_id: str
    data: dict[str, bytes]  # file name -> bytes
    ids: dict[str, str]  # file name -> object id


class Platform:
    """A module's server plus the calls the tests make of it."""

    def __init__(self, server: Server, directory: Path) -> None:
        self.server = server
        self.url = server.url
        self.dir = directory
        self.admin = bearer(server.admin_token)
        self.http = httpx.Client(base_url=server.url, timeout=60)
        self.count = 0

    def submit(self, study: str, sizes: dict[str, int], access: str = "controlled") -> Analysis:
        self.count += 1
        folder = self.dir / f"a{self.count}"
        folder.mkdir(parents=True)
        data = {}
        for name, size in sizes.items():
            data[name] = os.urandom(size)
            (folder / name).write_bytes(data[name])
        analysis_id, ids = submit(
            self.http, song_payload(study, data, donor=f"D{self.count}", access=access), self.admin
        )
        return Analysis(analysis_id, data, ids)

    def initiate(
        self, object_id: str, size: int, checksum: str | None = None, **extra
    ) -> httpx.Response:
        params = {"fileSize": size, **({"md5": checksum} if checksum else {}), **extra}
        return self.http.post(f"/upload/{object_id}/uploads", params=params, headers=self.admin)

    def send_part(
        self, object_id: str, upload_id: str, part: dict, data: bytes, finalize: bool = True
    ) -> httpx.Response:
        chunk = data[part["offset"] : part["offset"] + part["partSize"]]
        put = httpx.put(part["url"], content=chunk, timeout=60)
        assert put.status_code == 200, put.text
        assert put.headers["ETag"].strip('"') == md5(chunk)
        if not finalize:
            return put
        return self.finalize(
            object_id, upload_id, part["partNumber"], md5(chunk), put.headers["ETag"]
        )

    def finalize(
        self, object_id: str, upload_id: str, number: int, checksum: str, etag: str
    ) -> httpx.Response:
        return self.http.post(
            f"/upload/{object_id}/parts",
            headers=self.admin,
            params={"uploadId": upload_id, "partNumber": number, "md5": checksum, "etag": etag},
        )

    def complete(self, object_id: str, upload_id: str) -> httpx.Response:
        return self.http.post(
            f"/upload/{object_id}", params={"uploadId": upload_id}, headers=self.admin
        )

    def upload(self, object_id: str, data: bytes) -> None:
        upload(self.http, object_id, data, self.admin)

    def upload_all(self, study: str, analysis: Analysis, publish: bool) -> None:
        for name, object_id in analysis.ids.items():
            self.upload(object_id, analysis.data[name])
        if publish:
            r = self.http.put(
                f"/studies/{study}/analysis/publish/{analysis.analysis_id}", headers=self.admin
            )
            assert r.status_code == 200, r.text

    def spec(self, object_id: str, token: str | None = None, **params) -> httpx.Response:
        headers = bearer(token) if token else self.admin
        return self.http.get(f"/download/{object_id}", params=params, headers=headers)


@dataclass
class World:
    p: Platform
    published: Analysis  # STORE, controlled: big.bam (11 MiB, 3 parts) + big.bam.bai
    open: Analysis  # STORE, open, published
    other: Analysis  # LST2, controlled, published
    unpublished: Analysis  # STORE, uploaded, not published
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("storage-api")
    with init_server(root / "data", "--part-size", "5") as server:
        p = Platform(server, root / "files")
        try:
            tokens = mint_tokens(
                server.data_dir,
                {
                    "store_reader": f"PROGRAMDATA-{STUDY}.READ",
                    "other_reader": f"PROGRAMDATA-{OTHER}.READ",
                    "score_reader": "score.READ",
                },
            )
            for study in (STUDY, OTHER):
                r = p.http.post(f"/studies/{study}/", headers=p.admin, json={"studyId": study})
                assert r.status_code == 200, r.text
            published = p.submit(STUDY, {"big.bam": BIG, "big.bam.bai": 999})
            p.upload_all(STUDY, published, publish=True)
            opened = p.submit(STUDY, {"open.bam": 4321}, access="open")
            p.upload_all(STUDY, opened, publish=True)
            other = p.submit(OTHER, {"q.bam": 777})
            p.upload_all(OTHER, other, publish=True)
            unpublished = p.submit(STUDY, {"unpub.bam": 5555})
            p.upload_all(STUDY, unpublished, publish=False)
            yield World(p, published, opened, other, unpublished, tokens)
        finally:
            p.http.close()


# -- ping -----------------------------------------------------------------------------------
def test_ping_gives_a_signed_url_to_the_sentinel(world):
    r = world.p.http.get("/download/ping")
    assert r.status_code == 200
    url = r.text.strip()
    assert url.startswith("http")
    fetched = httpx.get(url, timeout=60)
    assert fetched.status_code == 200
    assert fetched.content == b"heliograph"


# -- download specifications ----------------------------------------------------------------
def test_spec_parts_cover_the_object_and_carry_part_md5s(world):
    data = world.published.data["big.bam"]
    object_id = world.published.ids["big.bam"]
    r = world.p.spec(object_id, offset=0, length=-1)
    assert r.status_code == 200, r.text
    spec = r.json()
    assert spec["objectId"] == object_id
    assert spec["objectSize"] == len(data)
    assert spec["objectMd5"] == md5(data)
    parts = sorted(spec["parts"], key=lambda q: q["offset"])
    assert [q["partNumber"] for q in parts] == [1, 2, 3]
    assert [q["partSize"] for q in parts] == [PART, PART, MiB + 1234]
    position = 0
    whole = b""
    for part in parts:
        assert part["offset"] == position, "parts must be contiguous"
        chunk = data[part["offset"] : part["offset"] + part["partSize"]]
        assert part["sourceMd5"] == md5(chunk)
        got = fetch(part)
        assert got.status_code == 206
        assert got.content == chunk
        whole += got.content
        position += part["partSize"]
    assert position == len(data)
    assert md5(whole) == spec["objectMd5"]


@pytest.mark.parametrize(
    "offset, length",
    [
        (0, 100),
        (1000, PART + 10),  # spans parts: two parts of the range
        (2 * PART, -1),  # to the end
        (BIG - 1, 1),  # the last byte
    ],
)
def test_spec_for_a_byte_range(world, offset, length):
    data = world.published.data["big.bam"]
    r = world.p.spec(world.published.ids["big.bam"], offset=offset, length=length)
    assert r.status_code == 200, r.text
    spec = r.json()
    end = len(data) if length == -1 else offset + length
    assert spec["objectSize"] == end - offset
    parts = sorted(spec["parts"], key=lambda q: q["offset"])
    assert parts[0]["offset"] == offset
    assert sum(q["partSize"] for q in parts) == end - offset
    got = b"".join(fetch(q).content for q in parts)
    assert got == data[offset:end]


@pytest.mark.parametrize("offset, length", [(0, BIG + 1), (-1, 10), (BIG, 1)])
def test_spec_range_outside_the_object_is_400(world, offset, length):
    object_id = world.published.ids["big.bam"]
    song_error(
        world.p.spec(object_id, offset=offset, length=length), 400, "invalid.range", object_id
    )


def test_zero_length_range(world):
    r = world.p.spec(world.published.ids["big.bam"], offset=0, length=0)
    if r.status_code != 200:
        song_error(r, 400, "invalid.range")
        return
    for part in r.json()["parts"]:
        got = httpx.get(part["url"], timeout=60)
        assert got.status_code in (200, 206), got.text[:300]
        assert got.content == b""


def test_spec_external_is_one_whole_object_part(world):
    data = world.published.data["big.bam"]
    r = world.p.spec(world.published.ids["big.bam"], external="true")
    assert r.status_code == 200, r.text
    (part,) = r.json()["parts"]
    assert (part["offset"], part["partSize"]) == (0, len(data))
    got = httpx.get(part["url"], timeout=60)
    assert got.status_code == 200
    assert md5(got.content) == md5(data)


def test_spec_exclude_urls_has_no_urls(world):
    r = world.p.spec(world.published.ids["big.bam"], **{"exclude-urls": "true"})
    assert r.status_code == 200, r.text
    spec = r.json()
    assert len(spec["parts"]) == 3
    assert all(not q.get("url") for q in spec["parts"])
    assert spec["objectMd5"] == md5(world.published.data["big.bam"])


def test_only_published_objects_are_downloadable(world):
    object_id = world.unpublished.ids["unpub.bam"]
    song_error(
        world.p.spec(object_id),
        400,
        "analysis.not.published",
        object_id,
        "UNPUBLISHED",
        "PUBLISHED",
    )
    # Song's publish check asks for the spec without URLs: allowed
    r = world.p.spec(object_id, **{"exclude-urls": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["objectMd5"] == md5(world.unpublished.data["unpub.bam"])
    assert r.json()["objectSize"] == len(world.unpublished.data["unpub.bam"])


def test_suppressed_objects_are_not_downloadable(world):
    p = world.p
    a = p.submit(STUDY, {"supp.bam": 1234})
    p.upload_all(STUDY, a, publish=True)
    object_id = a.ids["supp.bam"]
    assert p.spec(object_id).status_code == 200
    r = p.http.put(f"/studies/{STUDY}/analysis/suppress/{a.analysis_id}", headers=p.admin)
    assert r.status_code == 200
    song_error(p.spec(object_id), 400, "analysis.not.published", "SUPPRESSED")


def test_spec_of_unknown_or_never_uploaded_object(world):
    missing = str(uuid.uuid4())
    song_error(world.p.spec(missing), 404, None, missing)
    a = world.p.submit(STUDY, {"never.bam": 100})
    object_id = a.ids["never.bam"]
    song_error(world.p.spec(object_id, **{"exclude-urls": "true"}), 404, None, object_id)


# -- uploads --------------------------------------------------------------------------------
def test_upload_refused_once_published(world):
    object_id = world.published.ids["big.bam"]
    data = world.published.data["big.bam"]
    song_error(
        world.p.initiate(object_id, len(data), md5(data)),
        400,
        "analysis.not.unpublished",
        object_id,
        "PUBLISHED",
    )
    song_error(
        world.p.initiate(object_id, len(data), md5(data), overwrite="true"),
        400,
        "analysis.not.unpublished",
    )


def test_upload_initiate_refuses_wrong_size_md5_and_empty(world):
    a = world.p.submit(STUDY, {"check.bam": 3000})
    object_id, data = a.ids["check.bam"], a.data["check.bam"]
    song_error(
        world.p.initiate(object_id, 2999, md5(data)),
        400,
        "upload.size.mismatch",
        "2999",
        "3000",
        "check.bam",
    )
    wrong = md5(b"not it")
    song_error(
        world.p.initiate(object_id, 3000, wrong), 400, "upload.md5.mismatch", wrong, md5(data)
    )
    song_error(world.p.initiate(object_id, 0), 400, "upload.empty", object_id)
    song_error(
        world.p.http.post(f"/upload/{object_id}/uploads", headers=world.p.admin),
        400,
        "malformed.parameter",
        "fileSize",
    )
    song_error(world.p.initiate(str(uuid.uuid4()), 3000), 404, "file.not.found")
    # none of those left an upload behind
    song_error(
        world.p.http.get(f"/upload/{object_id}/status", headers=world.p.admin),
        404,
        "upload.not.found",
        object_id,
    )


def test_upload_status_recovery_exists_and_complete(world):
    p = world.p
    a = p.submit(STUDY, {"multi.bam": PART + MiB})
    object_id, data = a.ids["multi.bam"], a.data["multi.bam"]
    assert p.http.get(f"/upload/{object_id}", headers=p.admin).json() is False
    r = p.initiate(object_id, len(data), md5(data))
    assert r.status_code == 200, r.text
    spec = r.json()
    upload_id = spec["uploadId"]
    assert spec["objectSize"] == len(data)
    assert [(q["offset"], q["partSize"]) for q in spec["parts"]] == [(0, PART), (PART, MiB)]
    song_error(p.initiate(object_id, len(data), md5(data)), 400, "upload.in.progress", upload_id)

    assert p.send_part(object_id, upload_id, spec["parts"][0], data).status_code == 200
    status = p.http.get(
        f"/upload/{object_id}/status", headers=p.admin, params={"fileSize": len(data)}
    )
    assert status.status_code == 200, status.text
    parts = {q["partNumber"]: q for q in status.json()["parts"]}
    assert status.json()["uploadId"] == upload_id
    assert parts[1]["md5"] == md5(data[:PART]) and not parts[1].get("url")
    assert not parts[2].get("md5") and parts[2]["url"]
    song_error(
        p.http.get(
            f"/upload/{object_id}/status", headers=p.admin, params={"fileSize": len(data) + 1}
        ),
        400,
        "upload.size.changed",
    )
    recovery = p.http.post(
        f"/upload/{object_id}/recovery", headers=p.admin, params={"fileSize": len(data)}
    )
    assert recovery.status_code == 200, recovery.text

    song_error(p.complete(object_id, upload_id), 400, "upload.incomplete", "[2]")
    assert p.send_part(object_id, upload_id, parts[2], data).status_code == 200
    assert p.complete(object_id, upload_id).status_code == 200
    assert p.http.get(f"/upload/{object_id}", headers=p.admin).json() is True
    song_error(p.http.get(f"/upload/{object_id}/status", headers=p.admin), 404, "upload.not.found")
    song_error(p.initiate(object_id, len(data), md5(data)), 400, "object.already.exists", object_id)
    spec = p.spec(object_id, **{"exclude-urls": "true"}).json()
    assert spec["objectMd5"] == md5(data)
    assert [q["sourceMd5"] for q in spec["parts"]] == [md5(data[:PART]), md5(data[PART:])]


def test_upload_batches_begin_resume_refuse_and_finish_each_upload(world):
    """pyscore's extension: each item answered as its single calls would answer it."""
    p = world.p
    a = p.submit(STUDY, {"b1.bam": PART + MiB, "b2.bam": 1000})
    one, two = a.ids["b1.bam"], a.ids["b2.bam"]
    d1, d2 = a.data["b1.bam"], a.data["b2.bam"]
    done = world.unpublished.ids["unpub.bam"]
    foreign = p.submit(OTHER, {"f.bam": 10}).ids["f.bam"]
    writer = mint_tokens(p.server.data_dir, {"w": f"PROGRAMDATA-{STUDY}.WRITE"})["w"]

    def start(*uploads, token=None):
        body = {"uploads": [dict(zip(("objectId", "fileSize", "md5"), u)) for u in uploads]}
        headers = bearer(token) if token else p.admin
        r = p.http.post("/upload/batch/start", json=body, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    first = start((one, len(d1), md5(d1)))[0]
    assert first["status"] == 200 and first["resumed"] is False
    assert p.send_part(one, first["uploadId"], first["parts"][0], d1).status_code == 200
    again, new, refused, forbidden = start(
        (one, len(d1), md5(d1)),
        (two, len(d2), md5(d2)),
        (done, 5555, None),
        (foreign, 10, None),
        token=writer,
    )
    assert again["resumed"] is True and again["uploadId"] == first["uploadId"]
    assert again["parts"][0]["md5"] == md5(d1[:PART]) and again["parts"][1]["url"]
    assert new["status"] == 200 and new["resumed"] is False
    assert (refused["status"], refused["errorId"]) == (400, "object.already.exists")
    assert forbidden["status"] == 403

    last = again["parts"][1]
    put = p.send_part(one, again["uploadId"], last, d1, finalize=False)
    put2 = p.send_part(two, new["uploadId"], new["parts"][0], d2, finalize=False)
    finish = {
        "uploads": [
            {
                "objectId": one,
                "uploadId": again["uploadId"],
                "parts": [{"partNumber": 2, "md5": md5(d1[PART:]), "etag": put.headers["ETag"]}],
            },
            {
                "objectId": two,
                "uploadId": new["uploadId"],
                "parts": [{"partNumber": 1, "md5": "0" * 32, "etag": put2.headers["ETag"]}],
            },
        ]
    }
    r = p.http.post("/upload/batch/finish", json=finish, headers=p.admin)
    assert r.status_code == 200, r.text
    ok, bad = r.json()["results"]
    assert ok == {"objectId": one, "status": 200}
    assert (bad["status"], bad["errorId"]) == (400, "upload.part.checksum")
    assert p.http.get(f"/upload/{one}", headers=p.admin).json() is True
    assert p.http.get(f"/upload/{two}", headers=p.admin).json() is False
    spec = p.spec(one, **{"exclude-urls": "true"}).json()
    assert spec["objectMd5"] == md5(d1)


def finish(p: Platform, *uploads: tuple[str, str, list[tuple[int, str, str]]]) -> list[dict]:
    """POST /upload/batch/finish: each (object id, upload id, parts as (number, md5, etag))."""
    body = {
        "uploads": [
            {
                "objectId": object_id,
                "uploadId": upload_id,
                "parts": [dict(zip(("partNumber", "md5", "etag"), q)) for q in parts],
            }
            for object_id, upload_id, parts in uploads
        ]
    }
    r = p.http.post("/upload/batch/finish", json=body, headers=p.admin)
    assert r.status_code == 200, r.text[:300]
    return r.json()["results"]


def test_a_finish_refuses_a_part_listed_again_before_doing_any_of_it(world):
    """Issue 20: one part listed 10,000 times in a finish held the database's write lock
    for seconds, each listing checked against the store and recorded again."""
    p = world.p
    a = p.submit(STUDY, {"again.bam": 1000})
    object_id, data = a.ids["again.bam"], a.data["again.bam"]
    spec = p.initiate(object_id, len(data), md5(data)).json()
    upload_id = spec["uploadId"]
    etag = p.send_part(object_id, upload_id, spec["parts"][0], data, False).headers["ETag"]
    part = (1, md5(data), etag)
    (repeated,) = finish(p, (object_id, upload_id, [part] * 10_000))
    assert (repeated["status"], repeated["errorId"]) == (400, "upload.part.repeated")
    assert "Part 1 " in repeated["message"] and object_id in repeated["message"]
    status = p.http.get(f"/upload/{object_id}/status", headers=p.admin).json()
    assert not status["parts"][0].get("md5"), "a part of a refused finish was recorded"
    (beyond,) = finish(p, (object_id, upload_id, [part, (2, md5(data), etag)]))
    assert (beyond["status"], beyond["errorId"]) == (400, "upload.part.number")
    assert finish(p, (object_id, upload_id, [part])) == [{"objectId": object_id, "status": 200}]
    assert p.spec(object_id, **{"exclude-urls": "true"}).json()["objectMd5"] == md5(data)


def test_an_upload_named_again_in_a_batch_is_answered_once(world):
    p = world.p
    a = p.submit(STUDY, {"twice.bam": 1000})
    object_id, data = a.ids["twice.bam"], a.data["twice.bam"]
    wanted = {"objectId": object_id, "fileSize": len(data), "md5": md5(data)}
    r = p.http.post("/upload/batch/start", json={"uploads": [wanted] * 3}, headers=p.admin)
    assert r.status_code == 200, r.text
    begun, *again = r.json()["results"]
    assert begun["status"] == 200 and begun["resumed"] is False
    assert len(again) == 2
    for x in again:
        assert (x["status"], x["errorId"]) == (400, "batch.repeated"), x
        assert object_id in x["message"] and "parts" not in x
    upload_id = begun["uploadId"]
    etag = p.send_part(object_id, upload_id, begun["parts"][0], data, False).headers["ETag"]
    done = (object_id, upload_id, [(1, md5(data), etag)])
    first, second = finish(p, done, done)
    assert first == {"objectId": object_id, "status": 200}
    assert (second["status"], second["errorId"]) == (400, "batch.repeated")


# -- what one answer of /upload/batch/start may cost ----------------------------------------
ACCEPT = {ACCEPT_HEADER: "partial"}
BIG_PARTS = 4_000  # parts of a "big" upload: two fill most of an answer's budget


def declared(p: Platform, sizes: list[int]) -> list[str]:
    """Object ids of a new unpublished analysis whose files declare these sizes: an upload
    is begun (its parts laid out, their URLs signed) from the declaration, no bytes needed."""
    p.count += 1
    files = {f"d{i}.bam": b"" for i in range(len(sizes))}
    payload = song_payload(STUDY, files, donor=f"D{p.count}")
    for entry, size in zip(payload["files"], sizes):
        entry["fileSize"] = size
    _, ids = submit(p.http, payload, p.admin)
    return [ids[name] for name in files]


def start_uploads(
    p: Platform, ids: list[str], sizes: list[int], headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"uploads": [{"objectId": i, "fileSize": n} for i, n in zip(ids, sizes)]}
    return p.http.post("/upload/batch/start", json=body, headers={**p.admin, **(headers or {})})


def begun(p: Platform, ids: list[str]) -> set[str]:
    """Which of these objects have an upload in progress."""
    with database(p.server.data_dir) as s:
        return set(s.scalars(select(Upload.object_id).where(Upload.object_id.in_(ids))))


def test_a_batch_start_answer_holds_at_most_its_parts_for_a_client_that_asks_again(world):
    """Issue 20: an answer of /upload/batch/start carried every upload's part URLs (1,000
    uploads of 10,000 parts: ten million URLs). A client that says it asks again for what an
    answer leaves out gets the first uploads within ANSWER_PARTS part URLs (never none);
    those left out are not begun, and asked again they come."""
    p = world.p
    sizes = [BIG_PARTS * PART] * 5 + [1000]
    ids = declared(p, sizes)
    answered: list[str] = []
    for _ in range(len(ids)):  # each answer answers at least one
        if len(answered) == len(ids):
            break
        at = len(answered)
        r = start_uploads(p, ids[at:], sizes[at:], ACCEPT)
        assert r.status_code == 200, r.text[:300]
        results = r.json()["results"]
        got = [x["objectId"] for x in results]
        assert got and got == ids[at : at + len(got)], "an answer is a prefix of what was asked"
        assert all(x["status"] == 200 and x["resumed"] is False for x in results)
        assert sum(len(x["parts"]) for x in results) <= ANSWER_PARTS
        assert begun(p, ids) == set(ids[: at + len(got)]), "an upload left out was begun"
        answered += got
    assert answered == ids
    first = start_uploads(p, ids, sizes, ACCEPT).json()["results"]  # all resumed now
    assert [x["objectId"] for x in first] == ids[: ANSWER_PARTS // BIG_PARTS]
    assert all(x["resumed"] and len(x["parts"]) == BIG_PARTS for x in first)


def test_a_batch_start_of_a_client_that_takes_no_cut_answer_is_whole_within_a_bound(world):
    """A client that does not say it takes cut answers (pyscore's before them, which takes
    a short answer for none) gets every upload it asked for, as before, up to UNCUT_PARTS
    part URLs; beyond, the batch is refused whole (413, naming the bound and the header)
    before any upload is begun."""
    p = world.p
    sizes = [BIG_PARTS * PART] * 3
    ids = declared(p, sizes)
    r = start_uploads(p, ids, sizes)
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert [(x["objectId"], x["status"]) for x in results] == [(i, 200) for i in ids]
    assert sum(len(x["parts"]) for x in results) == 3 * BIG_PARTS > ANSWER_PARTS

    huge = [MAX_PARTS * PART] * (UNCUT_PARTS // MAX_PARTS + 1)
    ids = declared(p, huge)
    song_error(
        start_uploads(p, ids, huge),
        413,
        "batch.too.large",
        str(UNCUT_PARTS),
        str(len(huge) * MAX_PARTS),
        ACCEPT_HEADER,
    )
    assert not begun(p, ids)
    r = start_uploads(p, ids, huge, ACCEPT)
    assert r.status_code == 200, r.text[:300]
    (one,) = r.json()["results"]
    assert (one["objectId"], one["status"], len(one["parts"])) == (ids[0], 200, MAX_PARTS)


class CutStarts(Api):
    """score-client's calls, recorded, each answer of /upload/batch/start cut to its first
    upload, as a server cuts a full answer."""

    def __init__(self, url: str, token: str) -> None:
        values = {**DEFAULTS, "metadata.url": url, "storage.url": url, "accessToken": token}
        super().__init__(ClientSettings(values=values))
        self.calls: list[tuple[str, str, dict]] = []

    def request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        self.calls.append((method, httpx.URL(url).path, dict(kwargs.get("headers") or {})))
        return super().request(method, url, what, **kwargs)

    def _batch(self, kind: type[T], url: str, body: dict, what: str, *args: Any) -> T:
        answer = super()._batch(kind, url, body, what, *args)
        if isinstance(answer, UploadStartAnswer):
            answer.results = answer.results[:1]
        return answer


def test_score_client_begins_the_rest_of_a_cut_batch_start_in_batches(world):
    """The client's batch uploads against cut answers: it says it takes them, asks again
    for the rest, and every file is uploaded, still by batch (not taken for a server that
    does not answer batches, nor failed)."""
    p = world.p
    a = p.submit(STUDY, {f"cut{i}.bam": 1000 + i for i in range(10)})
    folder = p.dir / f"a{p.count}"
    items = [Item(a.ids[name], folder / name, md5(data)) for name, data in a.data.items()]
    api = CutStarts(p.url, p.server.admin_token)
    uploader = Uploader(api, Reporter(io.StringIO()), 2)
    try:
        assert uploader.upload_many(items) == [None] * len(items)
    finally:
        uploader.close()
        api.close()
    for item in items:
        assert p.http.get(f"/upload/{item.object_id}", headers=p.admin).json() is True
    starts = [headers for _, path, headers in api.calls if path == "/upload/batch/start"]
    assert len(starts) >= len(items)  # one answered each
    assert all(headers == ACCEPT for headers in starts)
    assert not [path for _, path, _ in api.calls if path.endswith("/uploads")], "one by one"


def test_an_upload_begun_before_publishing_cannot_complete_after_it(world):
    """Issue 20: unpublish, begin an upload, publish, send other bytes, complete: a
    PUBLISHED file served other bytes under its recorded MD5. Publishing is refused while an
    upload is open; an upload found open on an analysis that is not UNPUBLISHED all the same
    (begun by an older server, or raced with publishing) takes no part and no completion."""
    p = world.p
    a = p.submit(STUDY, {"swap.bam": 1000})
    p.upload_all(STUDY, a, publish=True)
    object_id, data = a.ids["swap.bam"], a.data["swap.bam"]
    analysis = f"/studies/{STUDY}/analysis/{a.analysis_id}"
    state = f"/studies/{STUDY}/analysis/{{}}/{a.analysis_id}"
    assert p.http.put(state.format("unpublish"), headers=p.admin).status_code == 200
    spec = p.initiate(object_id, len(data), md5(data), overwrite="true").json()
    upload_id = spec["uploadId"]
    song_error(
        p.http.put(state.format("publish"), headers=p.admin),
        409,
        "upload.in.progress",
        "swap.bam",
        object_id,
        upload_id,
    )
    assert p.http.get(analysis).json()["analysisState"] == "UNPUBLISHED"

    with database(p.server.data_dir) as s:  # published all the same
        row = s.get(AnalysisRow, a.analysis_id)
        assert row is not None
        row.state = "PUBLISHED"
    forged = os.urandom(len(data))
    put = p.send_part(object_id, upload_id, spec["parts"][0], forged, finalize=False)
    sent = (1, md5(forged), put.headers["ETag"])
    refusals = [
        p.finalize(object_id, upload_id, *sent),
        p.complete(object_id, upload_id),
        p.http.get(f"/upload/{object_id}/status", headers=p.admin),
        p.http.post(
            f"/upload/{object_id}/recovery", headers=p.admin, params={"fileSize": len(data)}
        ),
    ]
    for r in refusals:
        song_error(r, 400, "analysis.not.unpublished", object_id, "PUBLISHED")
    (batched,) = finish(p, (object_id, upload_id, [sent]))
    assert (batched["status"], batched["errorId"]) == (400, "analysis.not.unpublished")

    got = p.spec(object_id)
    assert got.status_code == 200, got.text
    assert got.json()["objectMd5"] == md5(data)
    assert b"".join(fetch(q).content for q in got.json()["parts"]) == data
    assert p.http.delete(f"/upload/{object_id}", headers=p.admin).status_code == 200


def test_upload_cancel_forgets_the_parts(world):
    p = world.p
    a = p.submit(STUDY, {"cancel.bam": PART + 100})
    object_id, data = a.ids["cancel.bam"], a.data["cancel.bam"]
    spec = p.initiate(object_id, len(data), md5(data)).json()
    assert p.send_part(object_id, spec["uploadId"], spec["parts"][0], data).status_code == 200
    r = p.http.delete(f"/upload/{object_id}", headers=p.admin)
    assert r.status_code == 200, r.text
    song_error(p.http.get(f"/upload/{object_id}/status", headers=p.admin), 404, "upload.not.found")
    song_error(p.complete(object_id, spec["uploadId"]), 404, "upload.not.found")
    song_error(p.http.delete(f"/upload/{object_id}", headers=p.admin), 404, "upload.not.found")
    # the old part URL leads nowhere now
    if not os.environ.get("PYSCORE_TEST_S3"):  # S3 answers in its own XML
        stale = httpx.put(spec["parts"][1]["url"], content=data[PART:], timeout=60)
        song_error(stale, 404, "upload.not.found")
    fresh = p.initiate(object_id, len(data), md5(data))
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["uploadId"] != spec["uploadId"]
    assert all(not q.get("md5") and q["url"] for q in fresh.json()["parts"])


def test_part_finalize_checks_the_md5(world):
    p = world.p
    a = p.submit(STUDY, {"parts.bam": PART + 10})
    object_id, data = a.ids["parts.bam"], a.data["parts.bam"]
    spec = p.initiate(object_id, len(data), md5(data)).json()
    upload_id = spec["uploadId"]
    first = spec["parts"][0]
    # not sent yet
    song_error(
        p.finalize(object_id, upload_id, 1, md5(data[:PART]), md5(data[:PART])),
        400,
        "upload.part.missing",
        "1",
    )
    put = p.send_part(object_id, upload_id, first, data, finalize=False)
    etag = put.headers["ETag"].strip('"')
    wrong = md5(b"something else")
    song_error(
        p.finalize(object_id, upload_id, 1, wrong, wrong), 400, "upload.part.checksum", wrong
    )
    song_error(p.finalize(object_id, upload_id, 1, wrong, etag), 400, "upload.part.checksum")
    song_error(p.finalize(object_id, upload_id, 3, etag, etag), 400, "upload.part.number", "3")
    song_error(p.finalize(object_id, "not-the-upload", 1, etag, etag), 404, "upload.not.found")
    status = p.http.get(f"/upload/{object_id}/status", headers=p.admin).json()
    assert all(not q.get("md5") for q in status["parts"]), "a refused part was recorded"
    assert p.finalize(object_id, upload_id, 1, etag, f'"{etag}"').status_code == 200
    song_error(p.complete(object_id, upload_id), 400, "upload.incomplete", "2")


@sqlite_only
def test_finalized_part_is_recorded_once_acknowledged(world):
    """A 200 for a part means it is recorded, even while another process holds the
    database's write lock (the answer waits for the commit)."""
    p = world.p
    a = p.submit(STUDY, {"ack.bam": 3000})
    object_id, data = a.ids["ack.bam"], a.data["ack.bam"]
    spec = p.initiate(object_id, len(data), md5(data)).json()
    p.send_part(object_id, spec["uploadId"], spec["parts"][0], data, finalize=False)
    params = {"uploadId": spec["uploadId"], "partNumber": 1, "md5": md5(data), "etag": md5(data)}
    recorded = None
    with ThreadPoolExecutor(1) as pool:
        with database_write_locked(p.server.data_dir):
            future = pool.submit(
                httpx.post,
                f"{p.url}/upload/{object_id}/parts",
                params=params,
                headers=p.admin,
                timeout=60,
            )
            # 5 s to see an early answer in (well within the server's 30 s wait for the
            # lock): a window, not a limit; a slow machine can only make it see less
            try:
                answered = future.result(timeout=5)
            except FutureTimeout:  # waiting for the lock before answering: right
                answered = None
            if answered is not None and answered.status_code == 200:
                status = p.http.get(f"/upload/{object_id}/status", headers=p.admin).json()
                recorded = status["parts"][0].get("md5")
        assert future.result(timeout=60).status_code == 200
    assert answered is None or recorded == md5(data), "part acknowledged but not recorded"
    assert p.complete(object_id, spec["uploadId"]).status_code == 200


@local_store_only
def test_part_body_of_the_wrong_length_is_refused(world):
    p = world.p
    a = p.submit(STUDY, {"short.bam": 2000})
    object_id, data = a.ids["short.bam"], a.data["short.bam"]
    spec = p.initiate(object_id, len(data), md5(data)).json()
    url = spec["parts"][0]["url"]
    song_error(httpx.put(url, content=data[:1999], timeout=60), 400, "upload.part.size")
    song_error(httpx.put(url, content=data + b"x", timeout=60), 400, "upload.part.size")
    assert httpx.put(url, content=data, timeout=60).status_code == 200


def test_uploads_need_the_write_scope(world):
    p = world.p
    a = p.submit(STUDY, {"scope.bam": 100})
    object_id = a.ids["scope.bam"]
    url = f"/upload/{object_id}/uploads"
    song_error(p.http.post(url, params={"fileSize": 100}), 401, "unauthorized.token")
    song_error(
        p.http.post(url, params={"fileSize": 100}, headers=bearer(world.tokens["store_reader"])),
        403,
        None,
        f"PROGRAMDATA-{STUDY}.WRITE",
    )
    song_error(p.http.get(f"/upload/{object_id}"), 401, "unauthorized.token")


# -- listing --------------------------------------------------------------------------------
def test_listing_shows_what_each_token_may_read(world):
    p = world.p
    store_controlled = set(world.published.ids.values())
    open_ids = set(world.open.ids.values())
    other_controlled = set(world.other.ids.values())
    never = set(world.unpublished.ids.values())

    def listed(token: str) -> dict[str, dict]:
        r = p.http.get("/listing", headers=bearer(token))
        assert r.status_code == 200, r.text
        return {e["id"]: e for e in r.json()}

    anonymous = p.http.get("/listing")
    assert anonymous.status_code == 200, anonymous.text
    anonymous_ids = {e["id"] for e in anonymous.json()}
    assert open_ids <= anonymous_ids
    assert not (store_controlled | other_controlled | never) & anonymous_ids
    song_error(p.http.get("/listing", headers=bearer("not-a-token")), 401, "unauthorized.token")
    store = listed(world.tokens["store_reader"])
    assert store_controlled | open_ids <= set(store)
    assert not other_controlled & set(store)
    other = listed(world.tokens["other_reader"])
    assert other_controlled | open_ids <= set(other)
    assert not store_controlled & set(other)
    for everyone in (listed(world.tokens["score_reader"]), listed(p.server.admin_token)):
        assert store_controlled | open_ids | other_controlled <= set(everyone)
        assert not never & set(everyone)
    assert not never & set(store)
    big = store[world.published.ids["big.bam"]]
    assert big["size"] == len(world.published.data["big.bam"])
    assert big["lastModified"] > 1_600_000_000_000  # epoch milliseconds
