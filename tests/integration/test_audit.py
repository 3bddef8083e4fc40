"""The audit trail: each grant of controlled data and each refusal is recorded, with the
principal (never its secret), the study, the object, the byte ranges handed out, the client;
`score-server audit` reads it back filtered; the table refuses changes."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pyscore.server.settings import Settings
from tests.api import bearer, mint_tokens, submit, upload
from tests.conftest import SERVER, Server, cli_revoke, cli_token, init_server, run
from tests.publish import song_payload


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    """The demo study (controlled BAMs with indexes, open reference files), served with
    the audit records also sent as JSON lines to a file."""
    data_dir = tmp_path_factory.mktemp("audit") / "data"
    server = init_server(data_dir)
    out = run(SERVER, "demo", "--data-dir", str(data_dir), "--reads", "300", check=True)
    server.manifest = Path(out.stdout.strip().splitlines()[-1])
    server.start(env={"PYSCORE_AUDIT_LOG": str(data_dir.parent / "audit.jsonl")})
    yield server
    server.stop()


def manifest_rows(server: Server) -> dict[str, dict]:
    assert server.manifest is not None
    with open(server.manifest) as f:
        return {row["file_name"]: row for row in csv.DictReader(f, delimiter="\t")}


def records(server: Server, count: int, *filters: str) -> list[dict]:
    """`score-server audit --format json` with these filters, once at least `count` records
    match (they reach the database within a fraction of a second); at most a minute, a
    bound for a busy machine, not a time limit."""
    deadline = time.monotonic() + 60
    while True:
        out = run(SERVER, "audit", "--data-dir", str(server.data_dir), "--format", "json", *filters)
        assert out.returncode == 0, out.stderr
        found = [json.loads(line) for line in out.stdout.splitlines()]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def token_id(server: Server, name: str) -> str:
    out = run(SERVER, "token", "list", "--data-dir", str(server.data_dir), check=True)
    return next(line.split("\t")[0] for line in out.stdout.splitlines() if f"\t{name}\t" in line)


def test_each_grant_of_controlled_data_is_recorded_with_its_ranges(platform: Server) -> None:
    rows = manifest_rows(platform)
    bam = rows["DONOR-1-N.bam"]["object_id"]
    size = int(rows["DONOR-1-N.bam"]["file_size"])
    reference = rows["reference.fa"]["object_id"]  # an open file
    reader = user("reader")
    secret = mint_tokens(platform.data_dir, {reader: "PROGRAMDATA-DEMO.READ"})[reader]
    auth = bearer(secret) | {"User-Agent": "audit-test/1.0"}
    with httpx.Client(base_url=platform.url, headers=auth, timeout=30) as http:
        spec = http.get(f"/download/{bam}", params={"offset": 100, "length": 1000})
        assert spec.status_code == 200, spec.text
        external = http.get(f"/download/{bam}", params={"external": "true"})
        assert external.status_code == 200, external.text
        ticket = http.get(f"/htsget/reads/{bam}")
        assert ticket.status_code == 200, ticket.text
        drs = http.get(f"/ga4gh/drs/v1/objects/{bam}/access/https")
        assert drs.status_code == 200, drs.text
        page = http.get(f"/file/{bam}/download", headers={"X-Request-ID": "portal-dl-1"})
        assert page.status_code == 303, page.text
        listing = http.get("/listing")
        assert listing.status_code == 200, listing.text
        # open files are anyone's: their grants are not recorded
        assert http.get(f"/download/{reference}").status_code == 200
    ticket_ranges = [
        u["headers"]["Range"][len("bytes=") :]
        for u in ticket.json()["htsget"]["urls"]
        if "headers" in u
    ]
    assert ticket_ranges
    found = records(platform, 6, "--subject", reader)
    assert len(found) == 6, found
    by_action = {r["action"]: r for r in found}
    assert set(by_action) == {
        "download",
        "download.external",
        "htsget",
        "drs.access",
        "portal.download",
        "listing",
    }
    whole = f"0-{size - 1}"
    assert by_action["download"]["ranges"] == "100-1099"
    assert by_action["download.external"]["ranges"] == whole
    assert by_action["drs.access"]["ranges"] == whole
    assert by_action["portal.download"]["ranges"] == whole
    assert by_action["portal.download"]["request_id"] == "portal-dl-1"
    # the ticket's ranges, adjacent ones merged (the inline blocks are not object bytes)
    first, last = ticket_ranges[0].split("-")[0], ticket_ranges[-1].split("-")[1]
    assert by_action["htsget"]["ranges"].split("-")[0] == first
    assert by_action["htsget"]["ranges"].split("-")[-1] == last
    assert by_action["listing"]["reason"] == "DEMO"
    ident = token_id(platform, reader)
    for r in found:
        assert r["outcome"] == "granted" and r["status"] in (200, 303), r
        assert r["principal"] == ident and r["principal_name"] == reader and r["issuer"] == ""
        assert r["client"] == "127.0.0.1" and r["user_agent"] == "audit-test/1.0"
        if r["action"] != "listing":
            assert (r["study_id"], r["object_id"]) == ("DEMO", bam), r
    # the same records went to the JSON-lines file (for a SIEM); the secret went nowhere
    sink = (platform.data_dir.parent / "audit.jsonl").read_text()
    assert sum(json.loads(line)["principal_name"] == reader for line in sink.splitlines()) == 6
    assert secret not in sink
    out = run(SERVER, "audit", "--data-dir", str(platform.data_dir), check=True)
    assert secret not in out.stdout


def test_each_refusal_is_recorded_with_its_reason(platform: Server) -> None:
    rows = manifest_rows(platform)
    bam = rows["DONOR-2-N.bam"]["object_id"]
    outsider = user("outsider")
    secret = mint_tokens(platform.data_dir, {outsider: "PROGRAMDATA-OTHER.READ"})[outsider]
    revoked_user = user("revoked")
    revoked_id, revoked = cli_token(platform.data_dir, "score.READ", "--user", revoked_user)
    cli_revoke(platform.data_dir, revoked_id)
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        for path in (
            f"/download/{bam}",
            f"/htsget/reads/{bam}",
            f"/ga4gh/drs/v1/objects/{bam}/access/https",
            f"/file/{bam}/download",
        ):
            assert http.get(path, headers=bearer(secret)).status_code == 403, path
        nobody = http.get(f"/download/{bam}", headers={"X-Request-ID": f"anon-{outsider}"})
        assert nobody.status_code == 403
        forged = http.get(f"/download/{bam}", headers={"Authorization": f"Bearer x{secret}"})
        assert forged.status_code == 401
        assert http.get(f"/download/{bam}", headers=bearer(revoked)).status_code == 401
    found = records(platform, 4, "--subject", outsider)
    assert [r["action"] for r in found] == ["download", "htsget", "drs.access", "portal.download"]
    for r in found:
        assert (r["outcome"], r["status"], r["study_id"], r["object_id"]) == (
            "refused",
            403,
            "DEMO",
            bam,
        )
        assert "PROGRAMDATA-DEMO.READ" in r["reason"] and r["ranges"] == ""
    refused = records(
        platform, 3, "--object", bam, "--outcome", "refused", "--subject", "anonymous"
    )
    anonymous = [r for r in refused if r["request_id"] == f"anon-{outsider}"]
    assert len(anonymous) == 1 and "no access token" in anonymous[0]["reason"]
    tokens = [r for r in refused if r["status"] == 401]
    reasons = {r["reason"] for r in tokens}
    assert {"Invalid access token", "Access token has been revoked"} <= reasons, reasons
    assert {r["action"] for r in tokens} == {"GET /download/{object_id}"}


def test_uploads_and_publishes_are_recorded(platform: Server) -> None:
    study = f"AUD{uuid.uuid4().hex[:6].upper()}"
    run(SERVER, "study", "create", study, "--data-dir", str(platform.data_dir), check=True)
    writer, reader = user("writer"), user("reader")
    tokens = mint_tokens(
        platform.data_dir,
        {writer: f"PROGRAMDATA-{study}.WRITE", reader: f"PROGRAMDATA-{study}.READ"},
    )
    data = b"ACGT" * 5000
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        analysis_id, ids = submit(
            http, song_payload(study, {"a.bam": data}), headers=bearer(tokens[writer])
        )
        object_id = ids["a.bam"]
        refused = http.post(
            f"/upload/{object_id}/uploads",
            params={"fileSize": len(data)},
            headers=bearer(tokens[reader]),
        )
        assert refused.status_code == 403
        upload(http, object_id, data, headers=bearer(tokens[writer]))
        published = http.put(
            f"/studies/{study}/analysis/publish/{analysis_id}", headers=bearer(tokens[writer])
        )
        assert published.status_code == 200, published.text
    found = records(platform, 3, "--study", study, "--subject", writer)
    assert [(r["action"], r["object_id"], r["outcome"]) for r in found] == [
        ("upload.initiate", object_id, "granted"),
        ("upload.complete", object_id, "granted"),
        ("publish", analysis_id, "granted"),
    ]
    denied = records(platform, 1, "--study", study, "--subject", reader)
    assert [(r["action"], r["outcome"], r["status"]) for r in denied] == [
        ("upload.initiate", "refused", 403)
    ]


def test_audit_command_filters(platform: Server) -> None:
    rows = manifest_rows(platform)
    one, two = rows["DONOR-1-N.cram"]["object_id"], rows["DONOR-2-N.cram"]["object_id"]
    first, second = user("first"), user("second")
    tokens = mint_tokens(
        platform.data_dir, {first: "PROGRAMDATA-DEMO.READ", second: "PROGRAMDATA-DEMO.READ"}
    )
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        for who, object_id in ((first, one), (first, two), (second, two)):
            r = http.get(f"/download/{object_id}", headers=bearer(tokens[who]))
            assert r.status_code == 200, r.text
    assert len(records(platform, 2, "--subject", first)) == 2
    assert [r["object_id"] for r in records(platform, 1, "--subject", second)] == [two]
    both = records(platform, 2, "--object", two, "--since", "10m")
    assert {first, second} <= {r["principal_name"] for r in both}
    assert all(r["object_id"] == two for r in both)
    assert records(platform, 0, "--object", two, "--until", "2000-01-01") == []
    assert records(platform, 0, "--subject", first, "--since", "2999-01-01T00:00") == []
    assert records(platform, 0, "--study", "NO-SUCH-STUDY") == []
    # TSV: a header, then one line per record, tab-separated
    out = run(SERVER, "audit", "--data-dir", str(platform.data_dir), "--subject", first, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["at", "outcome", "action", "status"]
    assert len(lines) == 3 and all(len(x.split("\t")) == len(lines[0].split("\t")) for x in lines)
    bad = run(SERVER, "audit", "--data-dir", str(platform.data_dir), "--since", "yesterday")
    assert bad.returncode == 2 and "bad time 'yesterday'" in bad.stderr


def test_records_cannot_be_changed_or_deleted(platform: Server) -> None:
    from sqlalchemy import create_engine

    from pyscore.server.db import normalize_url
    from pyscore.server.settings import Settings

    records(platform, 1)
    engine = create_engine(normalize_url(Settings.load(platform.data_dir).database_url))
    try:
        for statement in (
            "UPDATE audit_events SET outcome = 'granted'",
            "DELETE FROM audit_events",
        ):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar()
    finally:
        engine.dispose()


def test_each_object_of_a_batch_is_recorded_with_its_own_answer(platform: Server) -> None:
    rows = manifest_rows(platform)
    bam, vcf = rows["DONOR-1-N.bam"]["object_id"], rows["DONOR-1-N.vcf.gz"]["object_id"]
    reader, outsider = user("batch-reader"), user("batch-outsider")
    tokens = mint_tokens(
        platform.data_dir, {reader: "PROGRAMDATA-DEMO.READ", outsider: "PROGRAMDATA-OTHER.READ"}
    )
    wanted = {"objects": [{"objectId": bam, "offset": 0, "length": 10}, {"objectId": vcf}]}
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        for who in (reader, outsider):
            r = http.post("/download/batch", json=wanted, headers=bearer(tokens[who]))
            assert r.status_code == 200, r.text
    granted = records(platform, 2, "--subject", reader)
    assert [(r["object_id"], r["outcome"], r["status"], r["ranges"]) for r in granted] == [
        (bam, "granted", 200, "0-9"),
        (vcf, "granted", 200, f"0-{int(rows['DONOR-1-N.vcf.gz']['file_size']) - 1}"),
    ]
    # the request succeeded, each object was refused: each record says so with its status
    refused = records(platform, 2, "--subject", outsider)
    assert [(r["object_id"], r["outcome"], r["status"]) for r in refused] == [
        (bam, "refused", 403),
        (vcf, "refused", 403),
    ]


def test_a_record_cannot_be_replaced_in_place(platform: Server) -> None:
    """INSERT OR REPLACE (SQLite) and an upsert (both) with an existing id would rewrite a
    record without an UPDATE or DELETE: refused, through the database's own driver."""
    bam = manifest_rows(platform)["DONOR-1-N.bam"]["object_id"]
    assert httpx.get(f"{platform.url}/download/{bam}").status_code == 403
    assert records(platform, 1, "--object", bam)
    url = Settings.load(platform.data_dir).database_url
    values = (
        "(id, at, action, outcome, status, principal, principal_name, issuer, study_id, "
        "object_id, ranges, reason, client, user_agent, request_id) VALUES ({id}, "
        "'2020-01-01 00:00:00', 'download', 'granted', 200, 'someone-else', '', '', NULL, "
        "NULL, '', 'rewritten', '127.0.0.1', '', 'forged')"
    )
    upsert = " ON CONFLICT (id) DO UPDATE SET reason = 'rewritten'"
    if url.startswith("sqlite"):
        con: Any = sqlite3.connect(platform.data_dir / "pyscore.sqlite", isolation_level=None)
        statements = [
            f"INSERT OR REPLACE INTO audit_events {values}",
            f"REPLACE INTO audit_events {values}",
            f"INSERT INTO audit_events {values}{upsert}",
        ]
    else:
        import psycopg

        con = psycopg.connect(url, autocommit=True)
        statements = [f"INSERT INTO audit_events {values}{upsert}"]
    try:
        first = con.execute("SELECT min(id) FROM audit_events").fetchone()[0]
        select = f"SELECT * FROM audit_events WHERE id = {first}"
        before = con.execute(select).fetchone()
        for statement in statements:
            with pytest.raises(Exception, match="append-only"):
                con.execute(statement.format(id=first))
        assert con.execute(select).fetchone() == before
        assert not con.execute("SELECT id FROM audit_events WHERE request_id = 'forged'").fetchall()
    finally:
        con.close()
