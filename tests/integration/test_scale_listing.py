"""Every path that lists or searches, on a generated platform of 100,000 data files (the
CI-sized form of `bench/scale.py --files 1000000`, tests/scale_platform.py): counts agree with
the rows, pages cover everything once in order however deep, and the big answers (manifests,
tables, /listing) are streamed. No timing is asserted; bench/RESULTS.md has the times.

SQLite in CI's first pass, PostgreSQL in its PostgreSQL pass (not again on S3: no object
byte is read here)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections import Counter
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from tests.api import bearer
from tests.conftest import SERVER, init_server, run
from tests.scale_platform import BIG, MOST_FILES, Shape, fill, ident

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("PYSCORE_TEST_S3")), reason="metadata only: the PostgreSQL pass has it"
)
SHAPE = Shape(analyses=50_000, audit_records=100_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings

    server = init_server(tmp_path_factory.mktemp("scale") / "data")
    platform = Platform.open(Settings.load(server.data_dir))
    fill(platform.db, SHAPE)
    server.start("--workers", "2")
    http = httpx.Client(base_url=server.url, timeout=300, headers=bearer(server.admin_token))
    try:
        yield server, platform.db, http
    finally:
        http.close()
        server.stop()
        platform.db.engine.dispose()


def streamed(http: httpx.Client, path: str, **params: str) -> str:
    """A GET's body, asserting it came in chunks as it was made (no Content-Length: the
    server did not hold the whole answer before sending it)."""
    with http.stream("GET", path, params=params) as r:
        assert r.status_code == 200, r.read()
        assert "content-length" not in r.headers, path
        assert r.headers.get("transfer-encoding") == "chunked", path
        return r.read().decode()


def table(http: httpx.Client, **params: str) -> list[dict]:
    text = streamed(http, "/repository/table.tsv", **params)
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def published_analyses() -> list[int]:
    return [i for i in range(SHAPE.analyses) if SHAPE.state_of(i) == "PUBLISHED"]


def check_counts(db, rows: list[dict]) -> None:
    """The portal's totals and facet counts (what the page shows) against a tally of the
    rows themselves, with no filter, one study, and one file type."""
    from pyscore.server import repository

    columns = {
        "study": "study_id",
        "data_type": "data_type",
        "file_type": "file_type",
        "access": "access",
        "analysis_type": "analysis_type",
    }
    for selected in (
        {},
        {"study": ["ST1"]},
        {"file_type": ["VCF"]},
        {"study": ["ST1", BIG], "access": ["open"], "data_type": ["Aligned Reads"]},
    ):
        chosen = [r for r in rows if all(r[columns[f]] in values for f, values in selected.items())]
        with db.session() as s:
            filters = repository.Filters(dict(selected))
            assert repository.totals(s, filters) == (
                len(chosen),
                sum(int(r["size"]) for r in chosen),
            )
            facets = repository.facet_counts(s, filters)
        for facet, column in columns.items():
            others = [
                r
                for r in rows
                if all(r[columns[f]] in v for f, v in selected.items() if f != facet)
            ]
            assert dict(facets[facet].values) == dict(Counter(r[column] for r in others)), facet
        donors = Counter(d for r in chosen for d in r["donors"].split("|") if d)
        top = facets["donor"].values
        assert facets["donor"].distinct == len(donors)
        assert [n for _, n in top] == sorted(donors.values(), reverse=True)[: len(top)]
        assert all(donors[d] == n for d, n in top)


def test_exports_stream_every_published_file_once_and_counts_agree(world):
    _server, db, http = world
    rows = table(http)
    assert len(rows) == 2 * len(published_analyses())
    assert len({r["object_id"] for r in rows}) == len(rows)
    assert [r["file_name"] for r in rows] == sorted(r["file_name"] for r in rows)
    manifest = streamed(http, "/repository/manifest.tsv", study="ST0")
    lines = manifest.splitlines()
    assert lines[0].startswith("repository_code\t")
    assert {line.split("\t")[2] for line in lines[1:]} == {
        r["object_id"] for r in rows if r["study_id"] == "ST0"
    }
    every = json.loads(streamed(http, "/repository/files.json", file_type="CRAM"))
    assert every["total"] == len(every["files"]) == sum(r["file_type"] == "CRAM" for r in rows)
    check_counts(db, rows)


def test_counts_follow_unpublishing_suppressing_and_publishing_again(world):
    _server, db, http = world
    chosen = random.Random(3).sample(published_analyses(), 12)
    for n, i in enumerate(chosen):
        action = "suppress" if n % 3 == 0 else "unpublish"
        r = http.put(f"/studies/{SHAPE.study_of(i)}/analysis/{action}/{ident('analysis', i)}")
        assert r.status_code == 200, r.text
    for i in chosen[1:3]:  # unpublished ones come back
        r = http.put(f"/studies/{SHAPE.study_of(i)}/analysis/publish/{ident('analysis', i)}")
        assert r.status_code == 200, r.text
    rows = table(http)
    assert len(rows) == 2 * (len(published_analyses()) - 10)
    check_counts(db, rows)


def test_migrating_fills_the_donor_cube_as_publishing_keeps_it(world):
    """Migration 0008 fills `repository_donor_cube` from the view: what it makes of an
    existing platform is what publishing, unpublishing and suppressing kept in step."""
    _server, db, _http = world
    from alembic import command

    from pyscore.server.db import _alembic
    from pyscore.server.tables import RepositoryDonorCube

    def cube() -> set[tuple]:
        with db.session() as s:
            rows = s.execute(select(RepositoryDonorCube).where(RepositoryDonorCube.files > 0))
            return {tuple(getattr(r, c.key) for c in r.__table__.columns) for (r,) in rows}

    kept = cube()
    assert len(kept) > SHAPE.samples  # a few combinations a donor
    db.engine.dispose()
    command.downgrade(_alembic(db.url), "0007")
    command.upgrade(_alembic(db.url), "head")
    assert cube() == kept


def test_entities_pages_cover_a_study_once_in_order(world):
    _server, db, http = world
    from pyscore.server.tables import File

    with db.session() as s:
        expected = list(
            s.scalars(select(File.object_id).where(File.study_id == BIG).order_by(File.object_id))
        )
    seen: list[str] = []
    page = 0
    while True:
        body = http.get("/entities", params={"projectCode": BIG, "page": page, "size": 10000})
        assert body.status_code == 200
        doc = body.json()
        assert doc["totalElements"] == len(expected)
        seen += [e["id"] for e in doc["content"]]
        if doc["last"]:
            break
        page += 1
        assert page <= len(expected) // 10000 + 1
    assert seen == expected
    deep = http.get("/entities", params={"projectCode": BIG, "page": 7, "size": 1000}).json()
    assert [e["id"] for e in deep["content"]] == expected[7000:8000]
    one = ident("analysis", 12345)
    by_analysis = http.get("/entities", params={"gnosId": one}).json()["content"]
    assert {e["fileName"].split(".", 2)[1] for e in by_analysis} == {"A0012345"}


def test_song_pages_are_slices_of_the_whole_list_however_deep(world):
    _server, db, http = world
    from pyscore.server.tables import Analysis

    with db.session() as s:
        order = list(
            s.scalars(
                select(Analysis.analysis_id)
                .where(Analysis.study_id == BIG, Analysis.state == "PUBLISHED")
                .order_by(Analysis.created_at, Analysis.analysis_id)
            )
        )
    deep = len(order) - 150
    for offset in (0, deep, deep + 100):
        r = http.get(f"/studies/{BIG}/analysis/paginated", params={"limit": 100, "offset": offset})
        assert r.status_code == 200
        doc = r.json()
        assert doc["totalAnalyses"] == len(order)
        assert [a["analysisId"] for a in doc["analyses"]] == order[offset : offset + 100]
        assert doc["hasNext"] == (offset + 100 < len(order))
        for a in doc["analyses"]:
            assert a["analysisState"] == "PUBLISHED" and a["samples"] and len(a["files"]) >= 2


def test_listing_streams_what_the_token_may_read(world):
    server, db, _http = world
    from pyscore.server.tables import Analysis, File

    for scopes, studies in (("PROGRAMDATA-ST0.READ", {"ST0"}), ("score.READ", None)):
        token = server.token(scopes)
        with db.session() as s:
            query = (
                select(File.object_id)
                .join(Analysis, Analysis.analysis_id == File.analysis_id)
                .where(Analysis.state == "PUBLISHED")
            )
            if studies:
                query = query.where((File.file_access == "open") | File.study_id.in_(studies))
            expected = sorted(s.scalars(query))
        with httpx.stream("GET", f"{server.url}/listing", headers=bearer(token), timeout=300) as r:
            assert r.status_code == 200
            assert "content-length" not in r.headers
            listed = json.loads(r.read())
        assert [e["id"] for e in listed] == expected
        assert all(e["size"] > 0 and e["lastModified"] > 0 for e in listed[:100])
        assert set(listed[0]) == {"id", "size", "lastModified"}  # the original's fields only


def test_the_listing_with_names_names_each_file_as_the_metadata_does(world):
    """`/listing?names=true` (pyscore's extension): the same entries, each with its file's
    analysis and name as the entities say them."""
    server, db, _http = world
    from pyscore.server.tables import File

    token = server.token("PROGRAMDATA-ST0.READ")
    plain = httpx.get(f"{server.url}/listing", headers=bearer(token), timeout=300).json()
    r = httpx.get(
        f"{server.url}/listing", params={"names": "true"}, headers=bearer(token), timeout=300
    )
    assert r.status_code == 200, r.text
    named = r.json()
    assert [{k: e[k] for k in ("id", "size", "lastModified")} for e in named] == plain
    with db.session() as s:
        files = {
            i: (a, n)
            for i, a, n in s.execute(select(File.object_id, File.analysis_id, File.file_name))
        }
    assert all((e["gnosId"], e["fileName"]) == files[e["id"]] for e in named)


def test_a_batch_of_1000_ids_answers_each(world):
    _server, _db, http = world
    picks = random.Random(5).sample(range(SHAPE.analyses), 1000)
    body = {"objects": [{"objectId": ident("object", MOST_FILES * i)} for i in picks]}
    r = http.post("/download/batch", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["objectId"] for x in results] == [o["objectId"] for o in body["objects"]]
    published = {i for i in picks if SHAPE.state_of(i) == "PUBLISHED"}
    statuses = Counter(x["status"] for x in results)
    assert statuses[200] >= len(published) - 12  # the other test may have unpublished some
    assert statuses[200] + statuses[400] == 1000


def test_audit_of_a_study_over_a_day(world):
    server, db, _http = world
    from pyscore.server import audit

    with db.session() as s:
        newest = s.scalar(select(func.max(audit.AuditEvent.at)))
        since = newest - timedelta(days=1)
        expected = s.scalar(
            select(func.count())
            .select_from(audit.AuditEvent)
            .where(audit.AuditEvent.study_id == BIG, audit.AuditEvent.at >= since)
        )
    out = run(
        SERVER,
        "audit",
        "--data-dir",
        str(server.data_dir),
        "--since",
        since.isoformat(),
        "--study",
        BIG,
        "--format",
        "json",
        check=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert expected and len(lines) >= expected  # and the grants this module's requests made
    assert all(x["study_id"] == BIG for x in lines)


@pytest.mark.parametrize(
    "kind", ["ranges", "pages-of-10000", "pages-of-2000"], ids=["ours", "older-ours", "original"]
)
def test_the_clients_entity_listing_has_every_file_once(world, kind):
    """What `score-client mount` lists: from our server, ranges of ids side by side, each
    walked from the last id of its page before (pyscore's `from=`/`before=`); from one
    that refuses them (an older pyscore: 400), pages of 10,000 by number; from the
    original's Song (no batches), pages of 2,000; the pages after the first asked several at
    a time."""
    from pyscore import Client
    from pyscore.client.errors import ScoreError
    from pyscore.server.tables import File

    server, db, _http = world
    with db.session() as s:
        expected = sorted(s.scalars(select(File.object_id)))
    api = Client(token=server.admin_token, metadata_url=server.url, storage_url=server.url).api
    if kind == "original":
        api.no_batches(server.url)  # as if it were the original's Song
    asked: list[dict] = []
    page = api._entity_page

    def counted(kind_, filters, number, size):
        asked.append(filters)
        if kind == "pages-of-10000" and "from" in filters:
            error = ScoreError("entity listing: Unknown query parameter(s) ['before', 'from']")
            error.status = 400
            raise error
        return page(kind_, filters, number, size)

    api._entity_page = counted  # type: ignore[method-assign]
    listed = [e.id for e in api.entities()]
    assert len(listed) == len(set(listed)) == len(expected)
    assert sorted(listed) == expected
    assert any("from" in f for f in asked) == (kind != "original")


@pytest.mark.parametrize(
    "scopes,studies",
    [("PROGRAMDATA-ST0.READ", {"ST0"}), ("score.READ", None)],
    ids=["one-study", "every-study"],
)
def test_the_mounts_tree_is_what_the_token_may_read(world, scopes, studies):
    """`score-client mount`'s tree (made in process, no FUSE needed): one file per object
    the token may read, in its analysis's folder, with its size; every other file left out
    (counted). Our server's listing names only what the token may read, and names each
    file (`names=true`), so the mount asks it for no entity pages, no analyses of a study
    nor a probe (on a million files, the biggest study's unpublished analyses were 25 MB of
    JSON and 29 s; the entity pages 200 MB)."""
    from pyscore import Client
    from pyscore.client import mount
    from pyscore.server.tables import Analysis, File, StoredObject

    server, db, _http = world
    token = server.token(scopes)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(File))
        query = (
            select(File.analysis_id, File.file_name, StoredObject.size)
            .join(Analysis, Analysis.analysis_id == File.analysis_id)
            .join(StoredObject, StoredObject.object_id == File.object_id)
            .where(Analysis.state == "PUBLISHED")
        )
        if studies:
            query = query.where((File.file_access == "open") | File.study_id.in_(studies))
        expected = {f"{a}/{name}": size for a, name, size in s.execute(query)}
    api = Client(token=token, metadata_url=server.url, storage_url=server.url).api
    asked: list[str] = []
    send = api.send_once

    def counted(method, url, *args, **kwargs):
        asked.append(url)
        return send(method, url, *args, **kwargs)

    api.send_once = counted  # type: ignore[method-assign]
    warned: list[str] = []
    tree = mount.fetch_tree(api, "bundle", None, warned.append)
    shown = {
        f"{folder}/{name}": node.size
        for folder, analysis in tree.root.children.items()
        for name, node in analysis.children.items()
    }
    assert shown == expected
    assert tree.files == len(expected)
    assert tree.left_out == total - len(expected) and not warned
    # three small or single requests: the service's ping (what is it?), how many files the
    # metadata names (a page of one), and the listing with names; no entity pages at all
    assert sorted(u.split("?")[0].rsplit("/", 2)[-2:][-1] for u in asked) == [
        "entities",
        "listing",
        "ping",
    ], asked[:5]
