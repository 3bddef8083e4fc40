"""`score-server import song`: a SONG platform (tests/overture_double.py) moved into pyscore
through SONG's open HTTP API and straight from SONG's PostgreSQL; what pyscore then answers
is what SONG answered, ids, states, histories and times included."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from pyscore.server.importing.records import song_time
from pyscore.server.settings import Settings
from pyscore.server.tables import Base
from tests.api import bearer
from tests.conftest import SERVER, init_server, one_line_error, run
from tests.loopback import Loopback
from tests.overture_double import (
    SongApiDouble,
    SongPlatform,
    create_song_database,
    example_platform,
    local_id,
    write_song_database,
)

POSTGRES = os.environ.get("PYSCORE_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="needs PYSCORE_TEST_POSTGRES")


def import_song(data_dir: Path, *source: str, check: bool = True):
    return run(SERVER, "import", "song", "--data-dir", str(data_dir), *source, check=check)


def fingerprint(data_dir: Path, marks: bool = True) -> str:
    """A hash of every row of every table pyscore has (`marks`: the import's own bookkeeping
    too): equal means nothing changed."""
    engine = create_engine(
        Settings.load(data_dir).database_url.replace("postgresql://", "postgresql+psycopg://")
    )
    h = hashlib.sha256()
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name == "import_marks" and not marks:
                continue
            rows = conn.execute(select(table)).all()
            h.update(json.dumps(sorted(map(repr, rows))).encode())
        h.update(str(conn.execute(text("SELECT count(*) FROM audit_events")).scalar()).encode())
    engine.dispose()
    return h.hexdigest()


def _normal(value: Any, key: str = "") -> Any:
    """SONG's JSON and pyscore's compared as data: times as instants, empty info dropped,
    samples and files in id order."""
    if isinstance(value, dict):
        return {
            k: _normal(v, k)
            for k, v in value.items()
            if not (k == "info" and not v) and not (v is None and k.endswith("At"))
        }
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        if key in ("samples", "files"):
            items.sort(key=lambda x: x.get("sampleId") or x.get("objectId"))
        return items
    if key.endswith("At") and isinstance(value, str):
        return song_time(value)
    return value


def counts(out: str) -> dict[tuple[str, str], list[str]]:
    """The summary table: (study, records) -> [new, changed, unchanged, not imported]."""
    rows = {}
    for line in out.splitlines()[1:]:
        if not line.strip():
            break
        cells = line.split()
        *name, new, changed, same, skipped = cells
        rows[(name[0], " ".join(name[1:]))] = [new, changed, same, skipped]
    return rows


def check_platform(url: str, song: SongPlatform) -> None:
    """pyscore answers every study, analysis type, entity and analysis as SONG did."""
    http = httpx.Client(base_url=url, timeout=30)
    assert http.get("/studies/all").json() == sorted(song.studies)
    for study_id, study in song.studies.items():
        got = http.get(f"/studies/{study_id}").json()
        assert {k: got.get(k) for k in study} == study
    for t in song.types:
        got = http.get(
            f"/schemas/{t['name']}", params={"version": t["version"], "unrenderedOnly": "true"}
        ).json()
        assert got["schema"] == t["schema"]
        assert got["options"]["fileTypes"] == t["fileTypes"]
        assert song_time(got["createdAt"]) == song_time(t["createdAt"].isoformat())
    for analysis_id, a in song.analyses.items():
        got = http.get(f"/studies/{a['studyId']}/analysis/{analysis_id}")
        assert got.status_code == 200, got.text
        assert _normal(got.json()) == _normal(song.analysis_json(analysis_id))
    # every donor, those no analysis uses included, with its own id
    for study_id in song.studies:
        donors = http.get(f"/studies/{study_id}/all").json()["donors"]
        want = {d["donorId"] for d in song.donors.values() if d["studyId"] == study_id}
        assert {d["donorId"] for d in donors} == want
    # the File Repository lists what SONG had published (data files; index files ride along)
    listed = http.get("/repository/files.json").json()["files"]
    published = {
        f["objectId"]
        for a in song.analyses.values()
        if a["analysisState"] == "PUBLISHED"
        for f in a["files"]
        if not f["fileName"].endswith((".bai", ".tbi"))
    }
    assert {f["object_id"] for f in listed} == published


@pytest.fixture
def song() -> SongPlatform:
    return example_platform()


def test_import_from_songs_http_api(tmp_path: Path, song: SongPlatform):
    server = init_server(tmp_path / "data")
    with SongApiDouble(song) as api:
        first = import_song(server.data_dir, "--song-url", api.url)
        table = counts(first.stdout)
        assert table[("ABC", "analysis PUBLISHED")] == ["1", "0", "0", "0"]
        assert table[("ABC", "analysis UNPUBLISHED")] == ["2", "0", "0", "0"]
        assert table[("ABC", "analysis SUPPRESSED")] == ["1", "0", "0", "0"]
        assert table[("ABC", "donor")] == ["3", "0", "0", "0"]
        assert table[("*", "analysis type")][1] == "2"  # V1_2's types replace the seeded ones
        before = fingerprint(server.data_dir)
        second = import_song(server.data_dir, "--song-url", api.url)
        assert all(row[0] == row[1] == row[3] == "0" for row in counts(second.stdout).values())
        assert fingerprint(server.data_dir) == before  # a second run changes nothing
    with server:
        check_platform(server.url, song)
        # a resubmission naming an existing submitter donor, specimen and sample succeeds,
        # linked to SONG's entities; its object ids are those SONG would give
        writer = server.token("PROGRAMDATA-ABC.WRITE")
        payload = _payload("D3", "D3-SP", "D3-S")
        r = httpx.post(f"{server.url}/submit/ABC", json=payload, headers=bearer(writer))
        assert r.status_code == 200, r.text
        analysis_id = r.json()["analysisId"]
        body = httpx.get(f"{server.url}/studies/ABC/analysis/{analysis_id}").json()
        assert body["samples"][0]["donor"]["donorId"] == local_id("ABC", "D3")
        assert body["samples"][0]["sampleId"] == local_id("ABC", "D3-S")
        assert body["files"][0]["objectId"] == local_id(analysis_id, "new.bam")


def _payload(donor: str, specimen: str, sample: str) -> dict:
    return {
        "studyId": "ABC",
        "analysisType": {"name": "qcMetrics", "version": 1},
        "experiment": {"tool": "x"},
        "samples": [
            {
                "submitterSampleId": sample,
                "sampleType": "Total DNA",
                "matchedNormalSubmitterSampleId": None,
                "specimen": {
                    "submitterSpecimenId": specimen,
                    "tumourNormalDesignation": "Normal",
                    "specimenTissueSource": "Solid tissue",
                    "specimenType": "Normal",
                },
                "donor": {"submitterDonorId": donor, "gender": "Other"},
            }
        ],
        "files": [
            {
                "fileName": "new.bam",
                "fileSize": 3,
                "fileMd5sum": hashlib.md5(b"new").hexdigest(),
                "fileType": "BAM",
                "fileAccess": "open",
                "dataType": "Aligned Reads",
            }
        ],
    }


def test_a_later_run_imports_only_the_delta(tmp_path: Path, song: SongPlatform):
    server = init_server(tmp_path / "data")
    with SongApiDouble(song) as api:
        import_song(server.data_dir, "--song-url", api.url)
        # SONG goes on: a new analysis, one published, a file's info changed
        withdrawn = next(a for a in song.analyses.values() if len(a["history"]) == 2)
        song.change(withdrawn["analysisId"], "PUBLISHED")
        draft = next(a for a in song.analyses.values() if a["files"][0]["fileName"] == "draft.bam")
        draft["files"][0]["info"] = {"qc": "redone"}
        s = song.sample("ABC", "D4", "D4-SP", "D4-S")
        song.submit("ABC", ("qcMetrics", 1), [s], {"late.bam": b"late"}, {"experiment": {}})
        dry = import_song(server.data_dir, "--song-url", api.url, "--dry-run")
        assert "Dry run: nothing was written." in dry.stdout
        before = fingerprint(server.data_dir)
        delta = counts(import_song(server.data_dir, "--song-url", api.url).stdout)
        assert counts(dry.stdout) == delta  # the dry run said what the run did
        assert fingerprint(server.data_dir) != before
        assert delta[("ABC", "analysis PUBLISHED")] == ["0", "1", "1", "0"]
        assert delta[("ABC", "analysis UNPUBLISHED")] == ["1", "1", "0", "0"]
        assert delta[("ABC", "analysis SUPPRESSED")] == ["0", "0", "1", "0"]
        assert delta[("ABC", "donor")] == ["1", "0", "3", "0"]
        assert delta[("XYZ", "analysis PUBLISHED")] == ["0", "0", "1", "0"]
    with server:
        check_platform(server.url, song)


def test_records_pyscore_cannot_hold_are_reported_and_the_rest_imported(
    tmp_path: Path, song: SongPlatform
):
    s = next(iter(song.samples))
    odd = song.submit("ABC", ("qcMetrics", 1), [s], {"odd.bam": b"odd"}, {"experiment": {}})
    song.analyses[odd]["files"][0]["fileType"] = "X" * 70
    worse = song.submit("ABC", ("qcMetrics", 1), [s], {"worse.bam": b"w"}, {"experiment": {}})
    song.analyses[worse]["files"][0]["fileAccess"] = "public"
    server = init_server(tmp_path / "data")
    with SongApiDouble(song) as api:
        out = import_song(server.data_dir, "--song-url", api.url).stdout
    assert "Not imported (2):" in out
    assert f"analysis UNPUBLISHED {odd} (study ABC): file 'odd.bam': fileType 'XXX" in out
    assert "longer than pyscore's 64 characters" in out
    assert f"analysis UNPUBLISHED {worse} (study ABC): file 'worse.bam': unknown fileAccess" in out
    del song.analyses[odd], song.analyses[worse]
    with server:
        check_platform(server.url, song)
        assert httpx.get(f"{server.url}/studies/ABC/analysis/{odd}").status_code == 404


@needs_postgres
def test_import_from_songs_database(tmp_path: Path, song: SongPlatform):
    """SONG's schema (tests/song_schema.sql, or SONG's own Flyway SQL with PYSCORE_SONG_GIT)
    on a real PostgreSQL, filled as SONG writes it."""
    assert POSTGRES
    url = create_song_database(POSTGRES)
    write_song_database(song, url)
    server = init_server(tmp_path / "data")
    first = counts(import_song(server.data_dir, "--song-database", url).stdout)
    assert first[("ABC", "analysis UNPUBLISHED")] == ["2", "0", "0", "0"]
    assert first[("XYZ", "analysis PUBLISHED")] == ["1", "0", "0", "0"]
    before = fingerprint(server.data_dir)
    second = counts(import_song(server.data_dir, "--song-database", url).stdout)
    assert all(row[0] == row[1] == row[3] == "0" for row in second.values())
    assert fingerprint(server.data_dir) == before
    # SONG changes a file's info and a donor's gender: a third run takes just those
    import psycopg

    changed = next(a for a in song.analyses.values() if a["analysisState"] == "SUPPRESSED")
    object_id = changed["files"][0]["objectId"]
    donor = next(iter(song.donors.values()))
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE info SET info = '{\"late\": 1}' WHERE id = %s", (object_id,))
        conn.execute("UPDATE donor SET gender = 'Other' WHERE id = %s", (donor["donorId"],))
    third = counts(import_song(server.data_dir, "--song-database", url).stdout)
    assert third[("ABC", "analysis SUPPRESSED")] == ["0", "1", "0", "0"]
    assert third[(donor["studyId"], "donor")][1] == "1"
    assert fingerprint(server.data_dir) != before
    changed["files"][0]["info"] = {"late": 1}
    donor["gender"] = "Other"
    before = fingerprint(server.data_dir)
    # the same platform read through the API instead changes nothing either (but the tokens
    # the import keeps, which are the API's now)
    data = fingerprint(server.data_dir, marks=False)
    with SongApiDouble(song) as api:
        again = counts(import_song(server.data_dir, "--song-url", api.url).stdout)
    assert all(row[0] == row[1] == row[3] == "0" for row in again.values())
    assert fingerprint(server.data_dir, marks=False) == data
    with server:
        check_platform(server.url, song)


# -- bad input: one line, a non-zero exit, nothing changed ------------------------------------
def test_an_unreachable_song_changes_nothing(tmp_path: Path):
    server = init_server(tmp_path / "data")
    before = fingerprint(server.data_dir)
    closed = Loopback(lambda h: None)
    url = closed.url
    closed.close()
    line = one_line_error(import_song(server.data_dir, "--song-url", url, check=False))
    assert f"cannot reach SONG at {url}" in line
    assert fingerprint(server.data_dir) == before


def test_a_service_that_is_not_song_changes_nothing(tmp_path: Path):
    def html(h) -> None:
        body = b"<html>hello</html>"
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    server = init_server(tmp_path / "data")
    before = fingerprint(server.data_dir)
    web = Loopback(html)
    try:
        line = one_line_error(import_song(server.data_dir, "--song-url", web.url, check=False))
    finally:
        web.close()
    assert "did not answer JSON" in line and "SONG" in line
    assert fingerprint(server.data_dir) == before


@needs_postgres
def test_a_database_that_is_not_songs_changes_nothing(tmp_path: Path):
    import psycopg

    assert POSTGRES
    name = f"notsong_{os.urandom(4).hex()}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE study (id text)")
    server = init_server(tmp_path / "data")
    before = fingerprint(server.data_dir)
    line = one_line_error(import_song(server.data_dir, "--song-database", url, check=False))
    assert "is not SONG's database" in line and "Flyway" in line
    assert fingerprint(server.data_dir) == before


def test_a_closed_database_port_is_one_line(tmp_path: Path):
    server = init_server(tmp_path / "data")
    closed = Loopback(lambda h: None)
    port = closed.port
    closed.close()
    url = f"postgresql://song:secret@127.0.0.1:{port}/song"
    line = one_line_error(import_song(server.data_dir, "--song-database", url, check=False))
    assert "cannot reach SONG's database postgresql://song@127.0.0.1" in line
    assert "secret" not in line


def test_verify_compares_every_record_with_song(tmp_path: Path, song: SongPlatform):
    server = init_server(tmp_path / "data")
    with SongApiDouble(song) as api:
        import_song(server.data_dir, "--song-url", api.url)
        before = fingerprint(server.data_dir)
        # SONG changed after the import: a file's info, a new donor
        changed = next(a for a in song.analyses.values() if a["analysisState"] == "SUPPRESSED")
        changed["files"][0]["info"] = {"late": True}
        song.sample("XYZ", "X9", "X9-SP", "X9-S")
        verdict = run(
            SERVER, "import", "verify", "--data-dir", str(server.data_dir), "--song-url", api.url
        )
    assert verdict.returncode == 1, verdict.stderr
    assert f"analysis SUPPRESSED {changed['analysisId']} (study ABC) differs from SONG" in (
        verdict.stdout
    )
    assert f"donor {local_id('XYZ', 'X9')} (study XYZ) is not in pyscore" in verdict.stdout
    # no object was imported: the published files are not in storage
    published = [
        f for a in song.analyses.values() if a["analysisState"] == "PUBLISHED" for f in a["files"]
    ]
    for f in published:
        line = f"object {f['objectId']} ({f['fileName']}) of a published analysis is not in storage"
        assert line in verdict.stdout
    rows = {line.split()[0]: line.split()[1:] for line in verdict.stdout.splitlines()[1:7]}
    assert rows["analyses"][:2] == ["5", "4"]  # compared, equal
    assert fingerprint(server.data_dir) == before  # verify writes nothing
