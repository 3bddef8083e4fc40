"""The Song-compatible metadata API over real HTTP, against a real score-server.

One platform for the whole module (study SONG). Tests that change an analysis's state submit
their own analysis, so the tests do not depend on their order.
"""

from __future__ import annotations

import calendar
import os
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import httpx
import pytest

from pyscore.server import auth, metadata
from pyscore.server.metadata.ids import song_id
from pyscore.server.tables import Donor, Sample, Specimen
from tests import api
from tests.api import bearer, upload
from tests.conftest import (
    SERVER,
    Server,
    audit_trail,
    database_write_locked,
    init_server,
    one_line_error,
    run,
    sqlite_only,
)
from tests.publish import md5, publish_many, song_payload

STUDY = "SONG"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- helpers --------------------------------------------------------------------------------
def song_error(
    response: httpx.Response, status: int, error_id: str | None = None, *mentions: str
) -> dict:
    """Song errors here are checked field by field (tests.api.song_error with every_field)."""
    return api.song_error(response, status, error_id, *mentions, every_field=True)


def make_files(directory: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    """Random files of the given sizes in `directory`; returns name -> bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, size in sizes.items():
        data = os.urandom(size)
        (directory / name).write_bytes(data)
        out[name] = data
    return out


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with init_server(tmp_path_factory.mktemp("song-api") / "data") as srv:
        r = httpx.post(
            f"{srv.url}/studies/{STUDY}/",
            headers=bearer(srv.admin_token),
            json={
                "studyId": STUDY,
                "name": "Song API tests",
                "organization": "pyscore",
                "description": "integration",
            },
        )
        assert r.status_code == 200, r.text
        yield srv


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, str]:
    return bearer(server.admin_token)


@pytest.fixture(scope="module")
def writer(server: Server) -> str:
    return server.token(f"PROGRAMDATA-{STUDY}.WRITE", "--user", "writer")


@pytest.fixture(scope="module")
def http(server: Server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


class Submitted:
    def __init__(self, analysis_id: str, files: dict[str, bytes], body: dict) -> None:
        self.analysis_id = analysis_id
        self.files = files
        self.payload = body


def submit(
    http: httpx.Client, token: str, directory: Path, sizes: dict[str, int] | None = None, **kw
) -> Submitted:
    files = make_files(directory, sizes or {"x.bam": 3000, "x.bam.bai": 200})
    body = song_payload(STUDY, files, **kw)
    r = http.post(f"/submit/{STUDY}", json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    return Submitted(r.json()["analysisId"], files, body)


@pytest.fixture(scope="module")
def submitted(http, writer, tmp_path_factory) -> Submitted:
    """An UNPUBLISHED analysis that nobody changes: x.bam + x.bam.bai, donor D1."""
    return submit(
        http,
        writer,
        tmp_path_factory.mktemp("submitted"),
        donor="D1",
        info={"batch": "b-42", "lab": "north"},
    )


def object_ids(http: httpx.Client, analysis_id: str) -> dict[str, str]:
    r = http.get(f"/studies/{STUDY}/analysis/{analysis_id}/files")
    assert r.status_code == 200, r.text
    return {f["fileName"]: f["objectId"] for f in r.json()}


def state(http: httpx.Client, analysis_id: str) -> str:
    return http.get(f"/studies/{STUDY}/analysis/{analysis_id}").json()["analysisState"]


# -- health and studies ---------------------------------------------------------------------
def test_is_alive(http):
    r = http.get("/isAlive")
    assert r.status_code == 200
    assert r.json() is True


def test_serve_refuses_a_port_already_in_use(server, tmp_path):
    log = tmp_path / "second.log"
    with open(log, "wb") as out:
        second = subprocess.Popen(
            [SERVER, "serve", "--data-dir", str(server.data_dir), "--port", str(server.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60  # until it exits or serves; bounded, not timed
        while (
            time.monotonic() < deadline
            and second.poll() is None
            and "Started worker" not in log.read_text(errors="replace")
        ):
            time.sleep(0.1)
        running = second.poll() is None
    finally:
        if second.poll() is None:
            second.terminate()
            try:
                second.wait(10)
            except subprocess.TimeoutExpired:
                second.kill()
                second.wait()
    assert not running, f"a second server is serving port {server.port} too"
    assert second.returncode != 0


def test_studies_all_lists_ids(http):
    r = http.get("/studies/all")
    assert r.status_code == 200
    assert STUDY in r.json()
    assert all(isinstance(s, str) for s in r.json())


def test_get_study(http):
    r = http.get(f"/studies/{STUDY}")
    assert r.status_code == 200
    body = r.json()
    assert body["studyId"] == STUDY
    assert body["name"] == "Song API tests"
    assert body["organization"] == "pyscore"


@pytest.mark.parametrize("slash", ["/", ""])
def test_create_study_with_and_without_trailing_slash(http, admin, slash):
    study = f"NEW{len(slash)}"
    r = http.post(
        f"/studies/{study}{slash}", headers=admin, json={"studyId": study, "name": f"study {study}"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"message": f"Successfully created study '{study}'"}  # GenericMessage
    assert http.get(f"/studies/{study}").json()["name"] == f"study {study}"
    assert study in http.get("/studies/all").json()
    song_error(
        http.post(f"/studies/{study}/", headers=admin, json={"studyId": study}),
        409,
        "study.already.exists",
        study,
    )


def test_create_study_body_id_mismatch(http, admin):
    r = http.post("/studies/MISMATCH1/", headers=admin, json={"studyId": "OTHER"})
    assert r.status_code == 409  # as in Song
    song_error(r, r.status_code, "study.id.mismatch", "MISMATCH1", "OTHER")
    assert "MISMATCH1" not in http.get("/studies/all").json()


def test_study_id_mismatch_status_is_409_as_in_song(http, admin, tmp_path):
    song_error(
        http.post("/studies/MISMATCH2/", headers=admin, json={"studyId": "OTHER"}),
        409,
        "study.id.mismatch",
    )
    files = make_files(tmp_path, {"m.bam": 100})
    song_error(
        http.post(f"/submit/{STUDY}", headers=admin, json=song_payload("ELSEWHERE", files)),
        409,
        "study.id.mismatch",
    )


def test_unknown_study_is_404(http):
    song_error(http.get("/studies/NOPE"), 404, "study.id.does.not.exist", "NOPE")
    song_error(http.get("/studies/NOPE/all"), 404, "study.id.does.not.exist", "NOPE")
    song_error(http.get("/studies/NOPE/analysis"), 404, "study.id.does.not.exist")


def test_study_all_nests_donors_specimens_samples(http, submitted):
    r = http.get(f"/studies/{STUDY}/all")
    assert r.status_code == 200
    body = r.json()
    assert body["studyId"] == STUDY
    donor = next(d for d in body["donors"] if d["submitterDonorId"] == "D1")
    # ids as SONG's LocalIdService mints them: uuid5 of "studyId:submitterId"
    assert donor["donorId"] == song_id(STUDY, "D1")
    specimen = next(s for s in donor["specimens"] if s["submitterSpecimenId"] == "D1-SP")
    assert specimen["specimenId"] == song_id(STUDY, "D1-SP")
    assert [s["submitterSampleId"] for s in specimen["samples"]] == ["D1-S"]
    assert specimen["samples"][0]["sampleId"] == song_id(STUDY, "D1-S")


# -- analysis types -------------------------------------------------------------------------
def test_schemas_list(http):
    r = http.get("/schemas")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"limit", "offset", "count", "resultSet"}  # Song's PageDTO
    names = [t["name"] for t in body["resultSet"]]
    assert {"sequencingRead", "variantCall"} <= set(names)
    assert body["count"] >= len(names) and body["limit"] == 20
    assert all("schema" in t for t in body["resultSet"])  # hideSchema defaults to false
    hidden = http.get("/schemas", params={"hideSchema": "true", "names": "sequencingRead"})
    assert [t["name"] for t in hidden.json()["resultSet"]] == ["sequencingRead"]
    assert "schema" not in hidden.json()["resultSet"][0]


def test_schema_get_by_name_and_version(http):
    r = http.get("/schemas/sequencingRead")
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "sequencingRead"
    assert body["version"] == 1
    # rendered: the base's fields plus the type's
    assert {"files", "samples", "experiment"} <= set(body["schema"]["properties"])
    assert body["options"]["fileTypes"] == []  # SONG's legacy types take every file type
    assert http.get("/schemas/sequencingRead", params={"version": 1}).json()["version"] == 1
    raw = http.get("/schemas/sequencingRead", params={"unrenderedOnly": "true"}).json()
    assert "files" not in raw["schema"]["properties"]
    song_error(
        http.get("/schemas/sequencingRead", params={"version": 99}),
        404,
        "analysis.type.not.found",
        "sequencingRead",
    )
    song_error(http.get("/schemas/noSuchType"), 404, "analysis.type.not.found", "noSuchType")


def test_legacy_schema_paths(http):
    r = http.get("/schema/list")
    assert r.status_code == 200
    types = {t["name"]: t for t in r.json()["resultSet"]}
    assert "sequencingRead" in types
    assert "schema" in types["sequencingRead"]
    one = http.get("/schema/variantCall")
    assert one.status_code == 200
    assert one.json()["name"] == "variantCall"


QC_SCHEMA = {
    "type": "object",
    "required": ["experiment"],
    "properties": {"experiment": {"type": "object", "properties": {"tool": {"type": "string"}}}},
}


def test_register_analysis_type_as_admin_versions_it(http, admin):
    first = http.post(
        "/schemas",
        headers=admin,
        json={"name": "qcMetrics", "schema": QC_SCHEMA, "options": {"fileTypes": ["BAM"]}},
    )
    assert first.status_code == 200, first.text
    assert first.json()["name"] == "qcMetrics"
    assert first.json()["version"] == 1
    assert "files" in first.json()["schema"]["properties"]
    second = http.post("/schemas", headers=admin, json={"name": "qcMetrics", "schema": QC_SCHEMA})
    assert second.json()["version"] == 2
    assert http.get("/schemas/qcMetrics").json()["version"] == 2
    assert http.get("/schemas/qcMetrics", params={"version": 1}).json()["options"]["fileTypes"] == [
        "BAM"
    ]
    listed = http.get("/schemas", params={"names": "qcMetrics"}).json()["resultSet"]
    assert [(t["name"], t["version"]) for t in listed] == [("qcMetrics", 2), ("qcMetrics", 1)]


def listed(http: httpx.Client, query: str) -> list[tuple[str, int]]:
    """(name, version) of the page `GET /schemas?<query>` answers, sent as written (the way
    song-client's RequestParamBuilder joins its parameters)."""
    r = http.get(f"/schemas?{query}")
    assert r.status_code == 200, r.text
    return [(t["name"], t["version"]) for t in r.json()["resultSet"]]


def test_schemas_list_every_version_as_song_pages_them(http, admin):
    """Song's ListAnalysisTypes: every version, sorted by version (registration order) DESC
    unless asked otherwise, `offset` an element offset, as song-client list-analysis-types
    asks (--names, --versions, --sort-order, --sort-direction, --offset, --limit)."""
    schema = {**QC_SCHEMA, "properties": {**QC_SCHEMA["properties"], "n": {"type": "integer"}}}
    for name in ("pageA", "pageB"):
        for _ in range(3):
            r = http.post("/schemas", headers=admin, json={"name": name, "schema": schema})
            assert r.status_code == 200, r.text
    a = [("pageA", v) for v in (3, 2, 1)]
    b = [("pageB", v) for v in (3, 2, 1)]
    assert listed(http, "names=pageA,pageB") == b + a
    assert listed(http, "names=pageA&versions=1,3") == [("pageA", 3), ("pageA", 1)]
    assert listed(http, "names=pageA,pageB&sort=version&sortOrder=asc") == a[::-1] + b[::-1]
    assert listed(http, "names=pageB,pageA&sort=name,version&sortOrder=ASC") == a[::-1] + b[::-1]
    client = "hideSchema=false&unrenderedOnly=false&sortOrder=DESC&names=pageA&limit=2&offset=1"
    assert listed(http, client) == [("pageA", 2), ("pageA", 1)]
    page = http.get("/schemas?names=pageA&offset=2&limit=5").json()
    assert (page["count"], page["limit"], page["offset"]) == (3, 5, 2)
    assert [t["version"] for t in page["resultSet"]] == [1]
    raw = http.get("/schemas?names=pageA&versions=1&unrenderedOnly=true").json()["resultSet"]
    assert raw[0]["schema"] == schema  # as registered, not rendered with the base
    for query, mention in [
        ("offset=-1", "offset"),
        ("limit=many", "limit"),
        ("sort=colour", "colour"),
        ("sortOrder=UP", "UP"),
        ("versions=0", "versions"),
    ]:
        song_error(http.get(f"/schemas?{query}"), 400, "malformed.parameter", mention)


def test_registration_meta_schema_is_the_rule_registration_applies(http, admin):
    """GET /schemas/registration: the meta-schema every registered schema must satisfy
    (Song's: type object, an object `experiment` property, required naming it, none of the
    base's fields); what it refuses, registration refuses (400 schema.violation)."""
    r = http.get("/schemas/registration")
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["properties"]["properties"]["required"] == ["experiment"]
    assert meta["properties"]["required"]["contains"] == {"const": "experiment"}
    from jsonschema import Draft7Validator

    no_experiment = {"type": "object", "properties": {"tool": {"type": "string"}}}
    extra_key = {**QC_SCHEMA, "colour": "red"}
    for bad in (no_experiment, extra_key):
        assert list(Draft7Validator(meta).iter_errors(bad))
        song_error(
            http.post("/schemas", headers=admin, json={"name": "metaBad", "schema": bad}),
            400,
            "schema.violation",
        )
    assert not list(Draft7Validator(meta).iter_errors(QC_SCHEMA))
    song_error(http.get("/schemas/metaBad"), 404, "analysis.type.not.found")
    broken = {**QC_SCHEMA, "properties": {**QC_SCHEMA["properties"], "x": {"type": "nope"}}}
    song_error(
        http.post("/schemas", headers=admin, json={"name": "metaBroken", "schema": broken}),
        400,
        "malformed.json.schema",
    )
    song_error(
        http.post("/schemas", headers=admin, json={"name": "registration", "schema": QC_SCHEMA}),
        400,
        "illegal.analysis.type.name",
    )


def test_a_new_version_keeps_the_file_types_of_the_last(http, admin):
    """Song's registration: a version registered without fileTypes takes the latest's."""
    first = {"name": "typed", "schema": QC_SCHEMA, "options": {"fileTypes": ["BAM", "BAI"]}}
    assert http.post("/schemas", headers=admin, json=first).status_code == 200
    second = http.post("/schemas", headers=admin, json={"name": "typed", "schema": QC_SCHEMA})
    assert second.status_code == 200, second.text
    assert second.json()["options"]["fileTypes"] == ["BAM", "BAI"]
    assert http.get("/schemas/typed").json()["options"]["fileTypes"] == ["BAM", "BAI"]


def test_a_type_with_file_types_refuses_other_files(http, admin, writer):
    """options.fileTypes restricts files[].fileType (SONG's legacy types have none)."""
    r = http.post(
        "/schemas",
        headers=admin,
        json={"name": "bamOnly", "schema": QC_SCHEMA, "options": {"fileTypes": ["BAM"]}},
    )
    assert r.status_code == 200, r.text
    body = {**song_payload(STUDY, BAD_FILES), "analysisType": {"name": "bamOnly"}}
    body["files"][0]["fileType"] = "VCF"
    r = http.post(f"/submit/{STUDY}", json=body, headers=bearer(writer))
    song_error(r, 400, "schema.violation", "VCF")


def test_register_analysis_type_refused_for_non_admin(http, writer):
    body = {"name": "sneaky", "schema": QC_SCHEMA}
    song_error(http.post("/schemas", json=body), 401, "unauthorized.token")
    refused = http.post("/schemas", json=body, headers=bearer(writer))
    song_error(refused, 403, "forbidden.token", "song.WRITE")
    song_error(http.get("/schemas/sneaky"), 404, "analysis.type.not.found")


@pytest.mark.parametrize(
    "body, mention",
    [
        ({"name": "bad1", "schema": {"type": "object", "properties": {"files": {}}}}, "files"),
        ({"name": "bad2", "schema": {"type": "array"}}, "object"),
        ({"name": "bad name!", "schema": QC_SCHEMA}, "bad name!"),
        ({"schema": QC_SCHEMA}, "name"),
    ],
)
def test_register_analysis_type_invalid(http, admin, body, mention):
    r = http.post("/schemas", headers=admin, json=body)
    song_error(r, 400, None, mention)


# -- submission -----------------------------------------------------------------------------
def test_submit_assigns_ids_and_links_index(http, submitted):
    analysis = http.get(f"/studies/{STUDY}/analysis/{submitted.analysis_id}")
    assert analysis.status_code == 200
    body = analysis.json()
    assert UUID_RE.match(submitted.analysis_id)
    assert body["analysisState"] == "UNPUBLISHED"
    assert body["analysisType"] == {"name": "sequencingRead", "version": 1}
    assert body["experiment"]["libraryStrategy"] == "WGS"
    files = {f["fileName"]: f for f in body["files"]}
    assert set(files) == {"x.bam", "x.bam.bai"}
    ids = {f["objectId"] for f in files.values()}
    assert len(ids) == 2 and all(UUID_RE.match(i) for i in ids)
    for name, data in submitted.files.items():
        assert files[name]["fileMd5sum"] == md5(data)
        assert files[name]["fileSize"] == len(data)
        assert files[name]["analysisId"] == submitted.analysis_id
    sample = body["samples"][0]
    assert sample["submitterSampleId"] == "D1-S"
    assert sample["donor"]["submitterDonorId"] == "D1"

    # the legacy entity of the data file, then its index found the way score-client does it:
    # siblings in the same analysis (gnosId), named <file>.bai
    bam = http.get(f"/entities/{files['x.bam']['objectId']}").json()
    created = bam.pop("createdTime")  # the Java client's Entity reads it as a long
    assert isinstance(created, int) and abs(created / 1000 - time.time()) < 600
    assert bam == {
        "id": files["x.bam"]["objectId"],
        "gnosId": submitted.analysis_id,
        "fileName": "x.bam",
        "projectCode": STUDY,
        "access": "controlled",
    }
    siblings = http.get("/entities", params={"gnosId": bam["gnosId"], "size": 2000}).json()
    by_name = {e["fileName"]: e for e in siblings["content"]}
    assert set(by_name) == {"x.bam", "x.bam.bai"}
    index = by_name[bam["fileName"] + ".bai"]
    assert index["id"] == files["x.bam.bai"]["objectId"]
    assert index["gnosId"] == bam["gnosId"]


def test_resubmitting_reuses_donor_and_sample_ids(http, writer, submitted, tmp_path):
    again = submit(http, writer, tmp_path, {"y.bam": 500}, donor="D1")
    first = http.get(f"/studies/{STUDY}/analysis/{submitted.analysis_id}").json()["samples"][0]
    second = http.get(f"/studies/{STUDY}/analysis/{again.analysis_id}").json()["samples"][0]
    assert first["sampleId"] == second["sampleId"]
    assert first["donor"]["donorId"] == second["donor"]["donorId"]


def test_duplicate_submission(http, writer, submitted):
    r = http.post(f"/submit/{STUDY}", json=submitted.payload, headers=bearer(writer))
    song_error(r, 409, "duplicate.analysis.attempt", submitted.analysis_id)
    # the same files again, on purpose (other info, so info searches stay unambiguous)
    ok = http.post(
        f"/submit/{STUDY}",
        json={**submitted.payload, "info": {"batch": "dup"}},
        headers=bearer(writer),
        params={"allowDuplicates": "true"},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "OK"
    assert ok.json()["analysisId"] != submitted.analysis_id


def _bad(**changes) -> dict:
    body = song_payload(STUDY, BAD_FILES)
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


BAD_FILES = {"bad.bam": b"0123456789"}


def _file(**changes) -> list[dict]:
    entry = song_payload(STUDY, BAD_FILES)["files"][0]
    entry.update(changes)
    return [{k: v for k, v in entry.items() if v is not None}]


@pytest.mark.parametrize(
    "body, status, error_id, mentions",
    [
        pytest.param(
            _bad(files=_file(fileMd5sum="not-an-md5")),
            400,
            "schema.violation",
            ["fileMd5sum"],
            id="bad-md5",
        ),
        pytest.param(_bad(files=None), 400, "schema.violation", ["files"], id="missing-files"),
        pytest.param(_bad(files=[]), 400, "schema.violation", ["files"], id="empty-files"),
        pytest.param(
            _bad(files=_file(fileSize=None)),
            400,
            "schema.violation",
            ["fileSize"],
            id="missing-file-size",
        ),
        pytest.param(
            _bad(files=_file(fileAccess="public")),
            400,
            "schema.violation",
            ["public"],
            id="bad-access",
        ),
        pytest.param(
            _bad(files=_file(fileName="../escape.bam")),
            400,
            "schema.violation",
            ["fileName"],
            id="bad-file-name",
        ),
        pytest.param(_bad(samples=[]), 400, "schema.violation", ["samples"], id="no-samples"),
        pytest.param(
            _bad(experiment=None), 400, "schema.violation", ["experiment"], id="missing-experiment"
        ),
        pytest.param(
            _bad(analysisId="mine"),
            400,
            "schema.violation",
            ["analysisId"],
            id="client-analysis-id",
        ),
        pytest.param(
            _bad(analysisType=None),
            400,
            None,  # Song: malformed.parameter
            ["analysisType"],
            id="missing-analysis-type",
        ),
        pytest.param(
            _bad(analysisType={"name": "noSuchType"}),
            404,
            "analysis.type.not.found",
            ["noSuchType"],
            id="unknown-analysis-type",
        ),
        pytest.param(
            _bad(analysisType={"name": "sequencingRead", "version": 7}),
            404,
            "analysis.type.not.found",
            ["sequencingRead"],
            id="unknown-type-version",
        ),
        pytest.param(
            _bad(studyId="ELSEWHERE"),
            None,
            "study.id.mismatch",
            ["ELSEWHERE", STUDY],
            id="study-id-mismatch",
        ),
        pytest.param([1, 2, 3], 400, "schema.violation", [], id="json-array"),
    ],
)
def test_submit_bad_payload(http, admin, body, status, error_id, mentions):
    r = http.post(f"/submit/{STUDY}", json=body, headers=admin)
    song_error(r, status or r.status_code, error_id, *mentions)
    assert r.status_code in (400, 404, 409)


def test_submit_malformed_json_is_422(http, admin):
    r = http.post(
        f"/submit/{STUDY}",
        content=b'{"studyId": "SONG", "files": [',
        headers={**admin, "Content-Type": "application/json"},
    )
    song_error(r, 422, "payload.parsing")


def test_submit_to_unknown_study(http, admin):
    body = song_payload("NOSTUDY", BAD_FILES)
    song_error(
        http.post("/submit/NOSTUDY", json=body, headers=admin),
        404,
        "study.id.does.not.exist",
        "NOSTUDY",
    )


def test_submit_needs_write_scope(http, server):
    body = song_payload(STUDY, {"auth.bam": b"abc"})
    song_error(http.post(f"/submit/{STUDY}", json=body), 401, "unauthorized.token")
    reader = server.token(f"PROGRAMDATA-{STUDY}.READ")
    song_error(
        http.post(f"/submit/{STUDY}", json=body, headers=bearer(reader)),
        403,
        None,
        f"PROGRAMDATA-{STUDY}.WRITE",
    )


# -- Song's answers -------------------------------------------------------------------------
LOCAL_DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?$")


def local_time(text: str) -> float:
    """A time as Song writes its LocalDateTime (Jackson's ISO_LOCAL_DATE_TIME: no zone, at
    most 9 fraction digits, none if zero), read as UTC; epoch seconds."""
    assert LOCAL_DATE_TIME.fullmatch(text), text
    whole, _, fraction = text.partition(".")
    assert not fraction.endswith("0"), text  # Java drops trailing zeros
    at = time.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(at) + float(f"0.{fraction or 0}")


def test_state_changes_answer_song_generic_messages(http, server, writer, tmp_path):
    sub = _published(http, server, writer, tmp_path, "D-MSG")
    for action, words in (
        ("unpublish", "successfully unpublished"),
        ("publish", "successfully published"),
        ("suppress", "was suppressed"),
    ):
        r = change_state(http, writer, sub.analysis_id, action)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"message": f"AnalysisId {sub.analysis_id} {words}"}


def test_times_are_songs_local_date_times(http, server, writer, tmp_path):
    before = time.time()
    sub = _published(http, server, writer, tmp_path, "D-TIME")
    after = time.time()
    analysis = http.get(f"/studies/{STUDY}/analysis/{sub.analysis_id}").json()
    for key in ("createdAt", "updatedAt", "firstPublishedAt", "publishedAt"):
        assert before - 1 <= local_time(analysis[key]) <= after + 1, (key, analysis[key])
    (change,) = analysis["analysisStateHistory"]
    assert change["initialState"] == "UNPUBLISHED" and change["updatedState"] == "PUBLISHED"
    assert local_time(change["updatedAt"]) == local_time(analysis["publishedAt"])
    assert local_time(http.get("/schemas/sequencingRead").json()["createdAt"]) <= after


def test_study_all_puts_the_study_at_the_top_as_song(http, submitted):
    body = http.get(f"/studies/{STUDY}/all").json()
    assert "study" not in body  # StudyWithDonors: getStudy() is @JsonIgnore
    assert (body["studyId"], body["name"], body["organization"]) == (
        STUDY,
        "Song API tests",
        "pyscore",
    )
    assert body["description"] == "integration"
    assert any(d["submitterDonorId"] == "D1" for d in body["donors"])


# -- Song's scopes --------------------------------------------------------------------------
def test_song_write_is_songs_system_scope(http, server, tmp_path):
    """`song.WRITE` (Song's `auth.server.scope.system`) creates studies, registers analysis
    types and writes every study's metadata, as Song's @studySecurity and @systemSecurity
    allow it; Score's storage still wants a Score scope (song.WRITE uploads nothing)."""
    system = server.token("song.WRITE", "--user", "song-system")
    r = http.post("/studies/SYS1/", headers=bearer(system), json={"studyId": "SYS1"})
    assert r.status_code == 200, r.text
    r = http.post("/schemas", headers=bearer(system), json={"name": "sysType", "schema": QC_SCHEMA})
    assert r.status_code == 200, r.text
    files = make_files(tmp_path, {"sys.bam": 100})
    r = http.post("/submit/SYS1", headers=bearer(system), json=song_payload("SYS1", files))
    assert r.status_code == 200, r.text
    object_id = http.get(f"/studies/SYS1/analysis/{r.json()['analysisId']}/files").json()[0][
        "objectId"
    ]
    song_error(
        http.post(f"/upload/{object_id}/uploads", params={"fileSize": 100}, headers=bearer(system)),
        403,
        "forbidden.token",
        "PROGRAMDATA-SYS1.WRITE",
    )


def test_a_study_scope_creates_its_own_study_only(http, server):
    """Song's rule for `POST /studies/{id}/`: the study's scope (or the system scope)."""
    own = server.token("PROGRAMDATA-OWNED.WRITE", "--user", "owner")
    r = http.post("/studies/OWNED/", headers=bearer(own), json={"studyId": "OWNED"})
    assert r.status_code == 200, r.text
    song_error(
        http.post("/studies/NOTOWNED/", headers=bearer(own), json={"studyId": "NOTOWNED"}),
        403,
        "forbidden.token",
        "PROGRAMDATA-NOTOWNED.WRITE",
    )
    song_error(
        http.post("/schemas", headers=bearer(own), json={"name": "ownType", "schema": QC_SCHEMA}),
        403,
        "forbidden.token",
        "song.WRITE",
    )
    assert "NOTOWNED" not in http.get("/studies/all").json()
    song_error(http.get("/schemas/ownType"), 404, "analysis.type.not.found")


def test_song_read_and_unknown_scopes_write_nothing(http, server, tmp_path):
    """song.READ is a scope Song's callers carry (its own tests give it to a caller who may
    not write); a scope nobody knows grants nothing either: 403 forbidden.token, nothing
    made."""
    reader = server.token("song.READ", "--user", "song-reader")
    with api.database(server.data_dir) as s:
        token, secret = auth.create_token(s, "stranger", ["song.READ"])
        token.scopes = ["song.DELETE", "PROGRAMDATA-SONG.ADMIN"]  # stored by another version
    files = make_files(tmp_path, {"scoped.bam": 100})
    for who in (reader, secret):
        song_error(
            http.post("/studies/SCOPED/", headers=bearer(who), json={"studyId": "SCOPED"}),
            403,
            "forbidden.token",
        )
        song_error(
            http.post(f"/submit/{STUDY}", headers=bearer(who), json=song_payload(STUDY, files)),
            403,
            "forbidden.token",
            f"PROGRAMDATA-{STUDY}.WRITE",
        )
    assert "SCOPED" not in http.get("/studies/all").json()


def test_an_unknown_scope_is_refused_when_a_token_is_made(server):
    failed = run(
        SERVER, "token", "create", "--data-dir", str(server.data_dir), "--scopes", "song.DELETE"
    )
    line = one_line_error(failed)
    assert "song.DELETE" in line and "song.WRITE" in line


# -- reading analyses -----------------------------------------------------------------------
def test_analysis_files(http, submitted):
    r = http.get(f"/studies/{STUDY}/analysis/{submitted.analysis_id}/files")
    assert r.status_code == 200
    got = {
        f["fileName"]: (f["fileSize"], f["fileMd5sum"], f["fileAccess"], f["studyId"])
        for f in r.json()
    }
    assert got == {
        name: (len(d), md5(d), "controlled", STUDY) for name, d in submitted.files.items()
    }


def test_analysis_not_found(http, admin):
    missing = str(uuid.uuid4())
    song_error(
        http.get(f"/studies/{STUDY}/analysis/{missing}"), 404, "analysis.id.not.found", missing
    )
    song_error(http.get(f"/studies/{STUDY}/analysis/{missing}/files"), 404, "analysis.id.not.found")
    song_error(
        http.put(f"/studies/{STUDY}/analysis/publish/{missing}", headers=admin),
        404,
        "analysis.id.not.found",
    )


def test_list_analyses_by_state(http, submitted):
    default = http.get(f"/studies/{STUDY}/analysis")
    assert default.status_code == 200
    assert all(a["analysisState"] == "PUBLISHED" for a in default.json())
    assert submitted.analysis_id not in {a["analysisId"] for a in default.json()}
    unpublished = http.get(
        f"/studies/{STUDY}/analysis", params={"analysisStates": "UNPUBLISHED"}
    ).json()
    assert submitted.analysis_id in {a["analysisId"] for a in unpublished}
    assert all(a["analysisState"] == "UNPUBLISHED" for a in unpublished)
    both = http.get(
        f"/studies/{STUDY}/analysis", params={"analysisStates": "PUBLISHED,UNPUBLISHED"}
    ).json()
    assert len(both) == len(default.json()) + len(unpublished)
    song_error(
        http.get(f"/studies/{STUDY}/analysis", params={"analysisStates": "BOGUS"}),
        400,
        "malformed.parameter",
        "BOGUS",
    )


def test_list_analyses_paginated(http, submitted):
    everything = http.get(
        f"/studies/{STUDY}/analysis", params={"analysisStates": "UNPUBLISHED"}
    ).json()
    seen = []
    for offset in range(len(everything) + 1):  # bounded walk, one analysis per page
        page = http.get(
            f"/studies/{STUDY}/analysis/paginated",
            params={"analysisStates": "UNPUBLISHED", "limit": 1, "offset": offset},
        )
        assert page.status_code == 200
        body = page.json()
        assert body["totalAnalyses"] == len(everything)
        seen += [a["analysisId"] for a in body["analyses"]]
        if not body["hasNext"]:
            break
    assert seen == [a["analysisId"] for a in everything]
    assert submitted.analysis_id in seen
    song_error(
        http.get(f"/studies/{STUDY}/analysis/paginated", params={"limit": 0}),
        400,
        "malformed.parameter",
    )


# -- publish / unpublish / suppress ---------------------------------------------------------
def test_publish_refused_until_every_file_is_in_storage(http, server, writer, tmp_path):
    sub = submit(http, writer, tmp_path, {"p.bam": 4000, "p.bam.bai": 300}, donor="D2")
    ids = object_ids(http, sub.analysis_id)
    h = bearer(writer)
    url = f"/studies/{STUDY}/analysis/publish/{sub.analysis_id}"
    body = song_error(
        http.put(url, headers=h),
        409,
        "missing.storage.objects",
        "p.bam",
        "p.bam.bai",
        sub.analysis_id,
    )
    assert body["errorId"] == "missing.storage.objects"
    upload(http, ids["p.bam"], sub.files["p.bam"], bearer(writer))
    r = http.put(url, headers=h)
    song_error(r, 409, "missing.storage.objects", "p.bam.bai")
    assert ids["p.bam"] not in r.json()["message"]
    assert state(http, sub.analysis_id) == "UNPUBLISHED"
    upload(http, ids["p.bam.bai"], sub.files["p.bam.bai"], bearer(writer))
    ok = http.put(url, headers=h)
    assert ok.status_code == 200, ok.text
    assert sub.analysis_id in ok.text and "published" in ok.text
    analysis = http.get(f"/studies/{STUDY}/analysis/{sub.analysis_id}").json()
    assert analysis["analysisState"] == "PUBLISHED"
    assert analysis["publishedAt"] and analysis["firstPublishedAt"]
    assert analysis["analysisStateHistory"][-1]["updatedState"] == "PUBLISHED"
    listed = http.get(f"/studies/{STUDY}/analysis").json()
    assert sub.analysis_id in {a["analysisId"] for a in listed}
    # now downloadable
    spec = http.get(f"/download/{ids['p.bam']}", headers=bearer(server.admin_token))
    assert spec.status_code == 200
    assert spec.json()["objectMd5"] == md5(sub.files["p.bam"])


def change_state(http: httpx.Client, token: str, analysis_id: str, action: str) -> httpx.Response:
    """PUT /studies/SONG/analysis/{action}/{analysis_id}: publish, unpublish or suppress."""
    return http.put(f"/studies/{STUDY}/analysis/{action}/{analysis_id}", headers=bearer(token))


def _published(http, server, writer, directory, donor, sizes=None) -> Submitted:
    sub = submit(http, writer, directory, sizes or {"q.bam": 2000}, donor=donor)
    for name, object_id in object_ids(http, sub.analysis_id).items():
        upload(http, object_id, sub.files[name], bearer(writer))
    r = change_state(http, writer, sub.analysis_id, "publish")
    assert r.status_code == 200, r.text
    return sub


def test_unpublish_then_republish(http, server, writer, tmp_path):
    sub = _published(http, server, writer, tmp_path, "D3")
    r = change_state(http, writer, sub.analysis_id, "unpublish")
    assert r.status_code == 200, r.text
    assert "unpublished" in r.text
    assert state(http, sub.analysis_id) == "UNPUBLISHED"
    object_id = next(iter(object_ids(http, sub.analysis_id).values()))
    song_error(
        http.get(f"/download/{object_id}", headers=bearer(server.admin_token)),
        400,
        "analysis.not.published",
        "UNPUBLISHED",
    )
    r = change_state(http, writer, sub.analysis_id, "publish")
    assert r.status_code == 200
    history = http.get(f"/studies/{STUDY}/analysis/{sub.analysis_id}").json()[
        "analysisStateHistory"
    ]
    assert [(e["initialState"], e["updatedState"]) for e in history] == [
        ("UNPUBLISHED", "PUBLISHED"),
        ("PUBLISHED", "UNPUBLISHED"),
        ("UNPUBLISHED", "PUBLISHED"),
    ]


def test_suppress_is_final(http, server, writer, tmp_path):
    sub = _published(http, server, writer, tmp_path, "D4")
    r = change_state(http, writer, sub.analysis_id, "suppress")
    assert r.status_code == 200, r.text
    assert "suppressed" in r.text
    assert state(http, sub.analysis_id) == "SUPPRESSED"
    song_error(
        change_state(http, writer, sub.analysis_id, "unpublish"),
        400,
        "suppressed.state.transition",
        sub.analysis_id,
    )
    song_error(
        change_state(http, writer, sub.analysis_id, "publish"),
        400,
        "suppressed.state.transition",
        sub.analysis_id,
    )
    assert state(http, sub.analysis_id) == "SUPPRESSED"
    suppressed = http.get(
        f"/studies/{STUDY}/analysis", params={"analysisStates": "SUPPRESSED"}
    ).json()
    assert sub.analysis_id in [a["analysisId"] for a in suppressed]
    assert {a["analysisState"] for a in suppressed} == {"SUPPRESSED"}


@sqlite_only
def test_publish_is_committed_before_it_is_acknowledged(http, server, writer, tmp_path):
    """A 200 means the change is visible: while another process holds the database's write
    lock, the answer waits for the commit instead of going out first."""
    sub = submit(http, writer, tmp_path, {"race.bam": 1000}, donor="D8")
    for name, object_id in object_ids(http, sub.analysis_id).items():
        upload(http, object_id, sub.files[name], bearer(writer))
    url = f"{server.url}/studies/{STUDY}/analysis/publish/{sub.analysis_id}"
    seen = None
    with ThreadPoolExecutor(1) as pool:
        with database_write_locked(server.data_dir):
            future = pool.submit(httpx.put, url, headers=bearer(writer), timeout=60)
            try:
                answered = future.result(timeout=1.5)
            except FutureTimeout:  # waiting for the lock before answering: right
                answered = None
            if answered is not None and answered.status_code == 200:
                seen = state(http, sub.analysis_id)
        assert future.result(timeout=60).status_code == 200
    assert seen in (None, "PUBLISHED"), f"publish acknowledged, analysis still {seen}"
    assert state(http, sub.analysis_id) == "PUBLISHED"


def test_state_changes_need_write_scope(http, server, submitted):
    url = f"/studies/{STUDY}/analysis/publish/{submitted.analysis_id}"
    song_error(http.put(url), 401, "unauthorized.token")
    reader = server.token("score.READ")
    song_error(http.put(url, headers=bearer(reader)), 403, None, f"PROGRAMDATA-{STUDY}.WRITE")


# -- curation: PUT and PATCH of an analysis --------------------------------------------------
# Our own fixtures, in the shape of Song's updateAnalysis test documents: a type of two
# versions, the second requiring a `colour`.
CALL_V1 = {
    "type": "object",
    "required": ["experiment"],
    "properties": {
        "experiment": {
            "type": "object",
            "required": ["matchedNormalSampleSubmitterId", "variantCallingTool"],
            "properties": {
                "matchedNormalSampleSubmitterId": {"type": "string"},
                "variantCallingTool": {"type": "string"},
            },
        }
    },
}
CALL_V2 = {
    **CALL_V1,
    "required": ["experiment", "colour"],
    "properties": {
        **CALL_V1["properties"],
        "colour": {"type": "string", "enum": ["orange", "green", "red"]},
    },
}
EXPERIMENT = {"variantCallingTool": "silver bullet", "matchedNormalSampleSubmitterId": "N-1"}
CALL_1 = {"name": "curatedCall", "version": 1}


OTHER = "CURATION-OTHER"


@pytest.fixture(scope="module")
def other_study(http, admin) -> str:
    """A second study, where the SONG study's entities are not."""
    r = http.post(f"/studies/{OTHER}/", headers=admin, json={"studyId": OTHER})
    assert r.status_code == 200, r.text
    return OTHER


@pytest.fixture(scope="module")
def curated_type(http, admin) -> str:
    for schema in (CALL_V1, CALL_V2):
        r = http.post("/schemas", headers=admin, json={"name": "curatedCall", "schema": schema})
        assert r.status_code == 200, r.text
    return "curatedCall"


def submit_call(http, writer, directory: Path, donor: str) -> Submitted:
    files = make_files(directory, {f"{donor}.vcf.gz": 500})
    body = song_payload(STUDY, files, donor=donor, file_type="VCF", experiment=EXPERIMENT)
    body["analysisType"] = {"name": "curatedCall", "version": 1}
    body["info"] = {"description": "as submitted"}
    r = http.post(f"/submit/{STUDY}", json=body, headers=bearer(writer))
    assert r.status_code == 200, r.text
    return Submitted(r.json()["analysisId"], files, body)


def analysis(http: httpx.Client, analysis_id: str) -> dict:
    r = http.get(f"/studies/{STUDY}/analysis/{analysis_id}")
    assert r.status_code == 200, r.text
    return r.json()


def audit_actions(server: Server, object_id: str, count: int) -> list[tuple[str, str, int]]:
    """(action, outcome, status) of each audit record of `object_id`, once there are `count`."""
    found = audit_trail(server, "--object", object_id, at_least=count)
    return [(r["action"], r["outcome"], r["status"]) for r in found]


def events_of(server: Server, analysis_id: str) -> list[tuple[str, str]]:
    """(action, state) of each event the outbox holds for the analysis, in order."""
    from pyscore.server.events.outbox import Event

    with api.database(server.data_dir) as s:
        rows = s.query(Event).filter(Event.analysis_id == analysis_id).order_by(Event.id)
        return [(e.action, e.state) for e in rows]


def test_put_replaces_an_analysis_dynamic_data(http, server, writer, curated_type, tmp_path):
    sub = submit_call(http, writer, tmp_path, "D-PUT")
    url = f"/studies/{STUDY}/analysis/{sub.analysis_id}"
    before = analysis(http, sub.analysis_id)
    new = {"experiment": {**EXPERIMENT, "variantCallingTool": "golden hammer"}, "lab": "east"}
    v1 = {"name": curated_type, "version": 1}
    # without a version, the latest (2, which wants a colour) would apply
    latest = {"analysisType": {"name": curated_type}, **new}
    song_error(
        http.put(url, headers=bearer(writer), json=latest), 400, "schema.violation", "colour"
    )
    r = http.put(url, headers=bearer(writer), json={"analysisType": v1, **new})
    assert r.status_code == 200, r.text
    assert r.content == b""  # Song's void
    after = analysis(http, sub.analysis_id)
    assert after["experiment"] == new["experiment"] and after["lab"] == "east"
    assert "info" not in after  # replaced, not merged
    assert after["analysisType"] == {"name": curated_type, "version": 1}
    assert after["analysisState"] == "UNPUBLISHED"
    assert after["files"] == before["files"] and after["samples"] == before["samples"]
    assert after["createdAt"] == before["createdAt"]
    assert local_time(after["updatedAt"]) > local_time(before["updatedAt"])
    # a new version of the type: its rules apply (v2 wants a colour)
    to_v2 = {"analysisType": {"name": curated_type, "version": 2}, **new}
    song_error(http.put(url, headers=bearer(writer), json=to_v2), 400, "schema.violation", "colour")
    assert analysis(http, sub.analysis_id) == after  # nothing half-changed
    r = http.put(url, headers=bearer(writer), json={**to_v2, "colour": "green"})
    assert r.status_code == 200, r.text
    assert analysis(http, sub.analysis_id)["analysisType"] == {"name": curated_type, "version": 2}
    assert audit_actions(server, sub.analysis_id, 4) == [
        ("analysis.update", "error", 400),  # granted, then refused: nothing changed
        ("analysis.update", "granted", 200),
        ("analysis.update", "error", 400),
        ("analysis.update", "granted", 200),
    ]


@pytest.mark.parametrize(
    "body, status, error_id",
    [
        ({"experiment": EXPERIMENT}, 400, "malformed.parameter"),  # no analysisType
        ({"analysisType": {"version": 1}, "experiment": EXPERIMENT}, 400, "malformed.parameter"),
        ({"analysisType": {"name": "noSuchType"}}, 404, "analysis.type.not.found"),
        ({"analysisType": {"name": "curatedCall", "version": 9}}, 404, "analysis.type.not.found"),
        ({"analysisType": CALL_1, "experiment": {}}, 400, "schema.violation"),
        *[
            (
                {"analysisType": CALL_1, "experiment": EXPERIMENT, field: value},
                400,
                "schema.violation",
            )
            for field, value in [
                ("analysisId", "x"),
                ("studyId", STUDY),
                ("analysisState", "PUBLISHED"),
                ("analysisTypeId", "x"),
                ("files", []),
                ("samples", []),
            ]
        ],
        ([1, 2], 400, "malformed.parameter"),
    ],
)
def test_put_refusals_change_nothing(
    http, server, writer, curated_type, tmp_path, body, status, error_id
):
    sub = submit_call(http, writer, tmp_path, "D-PUTBAD")
    before = analysis(http, sub.analysis_id)
    url = f"/studies/{STUDY}/analysis/{sub.analysis_id}"
    song_error(http.put(url, headers=bearer(writer), json=body), status, error_id)
    assert analysis(http, sub.analysis_id) == before
    assert events_of(server, sub.analysis_id) == [("CREATE", "UNPUBLISHED")]  # none sent


def test_put_and_patch_find_the_analysis_as_song(
    http, server, writer, curated_type, other_study, tmp_path
):
    sub = submit_call(http, writer, tmp_path, "D-WHERE")
    body = {"analysisType": {"name": curated_type}, "experiment": EXPERIMENT}
    other = other_study
    for method in ("PUT", "PATCH"):

        def send(url: str, who: str | None = writer, method: str = method) -> httpx.Response:
            return http.request(method, url, json=body, headers=bearer(who))

        admin = server.admin_token
        unknown = f"/studies/NOPE/analysis/{sub.analysis_id}"
        song_error(send(unknown, admin), 404, "study.id.does.not.exist")
        song_error(send(f"/studies/{STUDY}/analysis/{uuid.uuid4()}"), 404, "analysis.id.not.found")
        elsewhere = f"/studies/{other}/analysis/{sub.analysis_id}"
        song_error(send(elsewhere, admin), 400, "entity.not.related.to.study", other)
        url = f"/studies/{STUDY}/analysis/{sub.analysis_id}"
        song_error(send(url, None), 401, "unauthorized.token")
        reader = server.token(f"PROGRAMDATA-{STUDY}.READ")
        song_error(send(url, reader), 403, "forbidden.token", f"PROGRAMDATA-{STUDY}.WRITE")


def test_patch_merges_into_an_analysis(http, server, writer, curated_type, tmp_path):
    """RFC 7396 merge patch of the analysis's data, validated against its own type."""
    sub = submit_call(http, writer, tmp_path, "D-PATCH")
    url = f"/studies/{STUDY}/analysis/{sub.analysis_id}"
    r = http.patch(url, headers=bearer(writer), json={"experiment": {"variantCallingTool": "v2"}})
    assert r.status_code == 200, r.text
    got = analysis(http, sub.analysis_id)
    assert got["experiment"] == {**EXPERIMENT, "variantCallingTool": "v2"}
    assert got["info"] == {"description": "as submitted"}
    r = http.patch(url, headers=bearer(writer), json={"info": None, "lab": "west"})
    assert r.status_code == 200, r.text
    got = analysis(http, sub.analysis_id)
    assert "info" not in got and got["lab"] == "west"
    for refused in (
        {"experiment": {"variantCallingTool": None}},  # a required field removed
        {"files": []},
        {"experiment": "none"},
        ["not", "an", "object"],
    ):
        song_error(http.patch(url, headers=bearer(writer), json=refused), 400, "schema.violation")
    as_json = {**bearer(writer), "Content-Type": "application/json"}
    song_error(http.patch(url, headers=as_json, content=b"{not json"), 422, "payload.parsing")
    assert analysis(http, sub.analysis_id) == got  # nothing half-changed
    # each update sent SONG's PUBLISH; a refused one nothing
    assert events_of(server, sub.analysis_id) == [
        ("CREATE", "UNPUBLISHED"),
        ("PUBLISH", "UNPUBLISHED"),
        ("PUBLISH", "UNPUBLISHED"),
    ]
    assert audit_actions(server, sub.analysis_id, 7) == [
        ("analysis.patch", "granted", 200),
        ("analysis.patch", "granted", 200),
        *[("analysis.patch", "error", 400)] * 4,
        ("analysis.patch", "error", 422),
    ]


def test_a_published_analysis_stays_published_when_updated(
    http, server, writer, curated_type, tmp_path
):
    """Song updates a published analysis in place (its state is not a rule of updates)."""
    sub = submit_call(http, writer, tmp_path, "D-PUBUPD")
    for name, object_id in object_ids(http, sub.analysis_id).items():
        upload(http, object_id, sub.files[name], bearer(writer))
    assert change_state(http, writer, sub.analysis_id, "publish").status_code == 200
    url = f"/studies/{STUDY}/analysis/{sub.analysis_id}"
    r = http.patch(url, headers=bearer(writer), json={"lab": "north"})
    assert r.status_code == 200, r.text
    got = analysis(http, sub.analysis_id)
    assert got["analysisState"] == "PUBLISHED" and got["lab"] == "north"
    object_id = next(iter(object_ids(http, sub.analysis_id).values()))
    assert http.get(f"/download/{object_id}", headers=bearer(server.admin_token)).status_code == 200


# -- curation: donors, specimens, samples and files ----------------------------------------
def test_donors_specimens_and_samples_are_read_as_song(http, server, submitted, other_study):
    sample = analysis(http, submitted.analysis_id)["samples"][0]
    donor, specimen = sample["donor"], sample["specimen"]
    got = http.get(f"/studies/{STUDY}/donors/{donor['donorId']}")
    assert got.status_code == 200, got.text
    assert got.json() == {**donor, "studyId": STUDY}
    assert http.get(f"/studies/{STUDY}/specimens/{specimen['specimenId']}").json() == specimen
    plain = {k: v for k, v in sample.items() if k not in ("donor", "specimen")}
    assert http.get(f"/studies/{STUDY}/samples/{sample['sampleId']}").json() == plain
    for kind, entity_id in [
        ("donors", donor["donorId"]),
        ("specimens", specimen["specimenId"]),
        ("samples", sample["sampleId"]),
    ]:
        word = kind[:-1]
        song_error(http.get(f"/studies/{STUDY}/{kind}/X{entity_id}"), 404, f"{word}.does.not.exist")
        song_error(http.get(f"/studies/NOPE/{kind}/{entity_id}"), 404, "study.id.does.not.exist")
        song_error(
            http.get(f"/studies/{other_study}/{kind}/{entity_id}"),
            400,
            "entity.not.related.to.study",
            entity_id,
        )


def unused_donor(server: Server, name: str) -> tuple[str, str, str]:
    """A donor -> specimen -> sample of study SONG that no analysis uses, as an import of
    a Song study's /all brings them (no submission makes one): their ids."""
    donor, specimen, sample = f"DO{name}", f"SP{name}", f"SA{name}"
    rows = [
        Donor(donor_id=donor, study_id=STUDY, submitter_donor_id=name, gender="Other"),
        Specimen(specimen_id=specimen, donor_id=donor, study_id=STUDY, fields={}),
        Sample(sample_id=sample, specimen_id=specimen, study_id=STUDY, fields={}),
    ]
    with api.database(server.data_dir) as s:
        for row in rows[1:]:
            setattr(row, f"submitter_{type(row).__name__.lower()}_id", f"{name}-{row.study_id}")
        for row in rows:  # one at a time: the tables have foreign keys, no relationships
            s.add(row)
            s.flush()
    return donor, specimen, sample


def test_deleting_a_donor_takes_its_specimens_and_samples(http, server, writer, admin):
    donor, specimen, sample = unused_donor(server, "DEL1")
    url = f"/studies/{STUDY}/donors/{donor}"
    song_error(http.delete(url), 401, "unauthorized.token")
    reader = server.token(f"PROGRAMDATA-{STUDY}.READ")
    song_error(http.delete(url, headers=bearer(reader)), 403, "forbidden.token")
    r = http.delete(url, headers=bearer(writer))
    assert r.status_code == 200, r.text
    assert r.text == "OK"
    for kind, entity_id in (("donors", donor), ("specimens", specimen), ("samples", sample)):
        song_error(
            http.get(f"/studies/{STUDY}/{kind}/{entity_id}"), 404, f"{kind[:-1]}.does.not.exist"
        )
    assert audit_actions(server, donor, 1)[-1] == ("donor.delete", "granted", 200)


def test_deleting_a_specimen_or_sample(http, server, writer):
    _, specimen, sample = unused_donor(server, "DEL2")
    _, _, lone = unused_donor(server, "DEL3")
    r = http.delete(f"/studies/{STUDY}/samples/{lone}", headers=bearer(writer))
    assert r.status_code == 200 and r.text == "OK", r.text
    song_error(http.get(f"/studies/{STUDY}/samples/{lone}"), 404, "sample.does.not.exist")
    r = http.delete(f"/studies/{STUDY}/specimens/{specimen}", headers=bearer(writer))
    assert r.status_code == 200 and r.text == "OK", r.text
    song_error(http.get(f"/studies/{STUDY}/samples/{sample}"), 404, "sample.does.not.exist")


def test_an_analysis_asked_for_under_another_study_is_not_related_as_song(
    http, admin, submitted, other_study
):
    """Song's checkAnalysisAndStudyRelated (securedDeepRead, securedReadFiles, publish,
    unpublish, suppress): an unknown study is 404 study.id.does.not.exist, an unknown
    analysis 404 analysis.id.not.found, and an analysis of another study 400
    entity.not.related.to.study naming the study it is in; nothing changes."""
    analysis_id = submitted.analysis_id
    paths = [("GET", "{}"), ("GET", "{}/files")] + [
        ("PUT", f"{action}/{{}}") for action in ("publish", "unpublish", "suppress")
    ]
    for method, path in paths:
        elsewhere = f"/studies/{other_study}/analysis/" + path.format(analysis_id)
        song_error(
            http.request(method, elsewhere, headers=admin),
            400,
            "entity.not.related.to.study",
            analysis_id,
            other_study,
            STUDY,
        )
        nowhere = "/studies/NOSUCHSTUDY/analysis/" + path.format(analysis_id)
        song_error(http.request(method, nowhere, headers=admin), 404, "study.id.does.not.exist")
        unknown = f"/studies/{other_study}/analysis/" + path.format(uuid.uuid4())
        song_error(http.request(method, unknown, headers=admin), 404, "analysis.id.not.found")
    assert analysis(http, analysis_id)["analysisState"] == "UNPUBLISHED"


def test_what_an_analysis_uses_is_never_deleted(http, server, writer, other_study, tmp_path):
    """Song's database refuses it (sampleset's foreign key: its answer is a 500); here 422
    with Song's errorId for a record its repository cannot delete, naming the analysis and
    its state, and nothing is deleted, not even the other ids of the request."""
    sub = _published(http, server, writer, tmp_path, "D-KEEP")
    sample = analysis(http, sub.analysis_id)["samples"][0]
    spare, _, _ = unused_donor(server, "DEL4")
    for kind, entity_id in [
        ("donors", sample["donor"]["donorId"]),
        ("specimens", sample["specimen"]["specimenId"]),
        ("samples", sample["sampleId"]),
    ]:
        ids = f"{spare},{entity_id}" if kind == "donors" else entity_id
        song_error(
            http.delete(f"/studies/{STUDY}/{kind}/{ids}", headers=bearer(writer)),
            422,
            f"{kind[:-1]}.repository.delete.record",
            sub.analysis_id,
            "PUBLISHED",
        )
    assert http.get(f"/studies/{STUDY}/donors/{spare}").status_code == 200
    after = analysis(http, sub.analysis_id)
    assert after["samples"] == [sample] and after["analysisState"] == "PUBLISHED"
    song_error(
        http.delete(
            f"/studies/{other_study}/donors/{sample['donor']['donorId']}",
            headers=bearer(server.admin_token),
        ),
        400,
        "entity.not.related.to.study",
    )


def test_deleting_files_of_an_unpublished_analysis(http, server, writer, other_study, tmp_path):
    sub = submit(http, writer, tmp_path, {"d.bam": 900, "d.bam.bai": 90}, donor="D-FDEL")
    ids = object_ids(http, sub.analysis_id)
    url = f"/studies/{STUDY}/files"
    song_error(http.delete(f"{url}/{ids['d.bam.bai']}"), 401, "unauthorized.token")
    song_error(
        http.delete(f"{url}/{ids['d.bam.bai']},{uuid.uuid4()}", headers=bearer(writer)),
        404,
        "file.not.found",
    )
    assert set(object_ids(http, sub.analysis_id)) == {"d.bam", "d.bam.bai"}  # all or nothing
    song_error(
        http.delete(
            f"/studies/{other_study}/files/{ids['d.bam.bai']}", headers=bearer(server.admin_token)
        ),
        400,
        "entity.not.related.to.study",
    )
    r = http.delete(f"{url}/{ids['d.bam.bai']}", headers=bearer(writer))
    assert r.status_code == 200 and r.text == "OK", r.text
    assert list(object_ids(http, sub.analysis_id)) == ["d.bam"]
    song_error(http.get(f"{url}/{ids['d.bam.bai']}"), 404, "file.not.found")
    # an analysis keeps at least one file (Song reads one without as corrupted)
    song_error(
        http.delete(f"{url}/{ids['d.bam']}", headers=bearer(writer)),
        422,
        "file.repository.delete.record",
        sub.analysis_id,
    )
    assert audit_actions(server, ids["d.bam.bai"], 1)[-1] == ("file.delete", "granted", 200)


def test_files_of_a_published_analysis_are_not_deleted(http, server, writer, tmp_path):
    sub = _published(http, server, writer, tmp_path, "D-FPUB", {"k.bam": 500, "k.bam.bai": 50})
    ids = object_ids(http, sub.analysis_id)
    song_error(
        http.delete(f"/studies/{STUDY}/files/{ids['k.bam.bai']}", headers=bearer(writer)),
        422,
        "file.repository.delete.record",
        "PUBLISHED",
    )
    assert set(object_ids(http, sub.analysis_id)) == {"k.bam", "k.bam.bai"}


# -- export -------------------------------------------------------------------------------
# Our own fixtures in the shape of Song's export test documents (documents/export/
# variantcall-input*.json and -output*.json): fields an entity does not know go to its info,
# ids and nulls are left out.
EXPORT_SCHEMA = {
    "type": "object",
    "required": ["experiment"],
    "properties": {"experiment": CALL_V1["properties"]["experiment"]},
}


def export_input(n: int) -> dict:
    return {
        "analysisType": {"name": "exportCall", "version": 1},
        "experiment": {"variantCallingTool": f"tool-{n}", "matchedNormalSampleSubmitterId": "N-9"},
        "samples": [
            {
                "submitterSampleId": f"exp-sample-{n}",
                "sampleType": "Total RNA",
                "size": 50 + n,
                "matchedNormalSubmitterSampleId": "N-9",  # a Tumour's is never null
                "specimen": {
                    "submitterSpecimenId": f"exp-specimen-{n}",
                    "ratio": f"1:{n}",
                    "tumourNormalDesignation": "Tumour",
                    "specimenTissueSource": "Solid tissue",
                    "specimenType": "Primary tumour",
                },
                "donor": {"submitterDonorId": f"exp-donor-{n}", "gender": "Female", "age": 30 + n},
            }
        ],
        "files": [
            {
                "fileName": f"calls-{n}.vcf.gz",
                "dataType": "SOME_DATA_TYPE",
                "fileSize": 1000 + n,
                "fileMd5sum": f"{n:032x}",
                "fileAccess": "open",
                "fileType": "VCF",
                "colour": "red",
            },
            {
                "fileName": f"calls-{n}.vcf.gz.idx",
                "dataType": "SOME_DATA_TYPE",
                "fileSize": 40 + n,
                "fileMd5sum": f"{n + 100:032x}",
                "fileAccess": "open",
                "fileType": "IDX",
                "colour": "green",
                "info": {"checked": True},
            },
        ],
        "institution": f"inst-{n}",
        "info": {"description": f"extra info {n}"},
    }


def export_output(n: int, study: str) -> dict:
    """What Song's export gives for export_input(n) submitted to `study`."""
    doc = export_input(n)
    (sample,) = doc["samples"]
    return {
        **doc,
        "studyId": study,
        "samples": [
            {
                "submitterSampleId": sample["submitterSampleId"],
                "sampleType": "Total RNA",
                "matchedNormalSubmitterSampleId": "N-9",
                "info": {"size": 50 + n},
                "specimen": {
                    **{k: v for k, v in sample["specimen"].items() if k != "ratio"},
                    "info": {"ratio": f"1:{n}"},
                },
                "donor": {
                    "submitterDonorId": f"exp-donor-{n}",
                    "gender": "Female",
                    "info": {"age": 30 + n},
                },
            }
        ],
        "files": [
            {
                **{k: v for k, v in f.items() if k not in ("colour", "info")},
                "info": {**f.get("info", {}), "colour": f["colour"]},
            }
            for f in doc["files"]
        ],
    }


@pytest.fixture(scope="module")
def exported(http, admin) -> dict[str, list[tuple[int, str]]]:
    """Studies EXPORT1 (inputs 1, 2) and EXPORT2 (input 3): (n, analysisId) of each."""
    r = http.post("/schemas", headers=admin, json={"name": "exportCall", "schema": EXPORT_SCHEMA})
    assert r.status_code == 200, r.text
    made: dict[str, list[tuple[int, str]]] = {}
    for study, numbers in (("EXPORT1", (1, 2)), ("EXPORT2", (3,))):
        r = http.post(f"/studies/{study}/", headers=admin, json={"studyId": study})
        assert r.status_code == 200, r.text
        for n in numbers:
            r = http.post(
                f"/submit/{study}", headers=admin, json={**export_input(n), "studyId": study}
            )
            assert r.status_code == 200, r.text
            made.setdefault(study, []).append((n, r.json()["analysisId"]))
    return made


def by_institution(payloads: list[dict]) -> dict[str, dict]:
    return {p["institution"]: p for p in payloads}


def test_export_of_a_study_is_songs(http, exported):
    """`song-client export -s` reads GET /export/studies/{s}: one {studyId, payloads}."""
    r = http.get("/export/studies/EXPORT1")
    assert r.status_code == 200, r.text
    (group,) = r.json()
    assert list(group) == ["studyId", "payloads"] and group["studyId"] == "EXPORT1"
    got = by_institution(group["payloads"])
    assert got == {f"inst-{n}": export_output(n, "EXPORT1") for n in (1, 2)}
    song_error(http.get("/export/studies/NOPE"), 404, "study.id.does.not.exist")


def test_export_of_analyses_groups_them_by_study(http, exported):
    """`song-client export -a` reads GET /export/analysis/{ids}, up to 100 ids a request."""
    (one, first), (_, _) = exported["EXPORT1"]
    ((three, third),) = exported["EXPORT2"]
    r = http.get(f"/export/analysis/{first},{third}")
    assert r.status_code == 200, r.text
    groups = {g["studyId"]: g["payloads"] for g in r.json()}
    assert groups == {
        "EXPORT1": [export_output(one, "EXPORT1")],
        "EXPORT2": [export_output(three, "EXPORT2")],
    }
    song_error(http.get(f"/export/analysis/{first},{uuid.uuid4()}"), 404, "analysis.id.not.found")


def test_an_exported_payload_submits_again(http, admin, exported):
    """What export gives is a payload: submitted to another study, it is the same analysis
    (new ids), and answers with its fields in info as Song does."""
    (payload,) = http.get(f"/export/analysis/{exported['EXPORT2'][0][1]}").json()[0]["payloads"]
    r = http.post("/studies/EXPORT3/", headers=admin, json={"studyId": "EXPORT3"})
    assert r.status_code == 200, r.text
    r = http.post("/submit/EXPORT3", headers=admin, json={**payload, "studyId": "EXPORT3"})
    assert r.status_code == 200, r.text
    again = http.get(f"/export/analysis/{r.json()['analysisId']}").json()[0]["payloads"]
    assert again == [{**payload, "studyId": "EXPORT3"}]
    got = http.get(f"/studies/EXPORT3/analysis/{r.json()['analysisId']}").json()
    assert got["samples"][0]["donor"]["info"] == {"age": 33}
    assert {f["info"]["colour"] for f in got["files"]} == {"red", "green"}


# -- Maestro's pull path ------------------------------------------------------------------
# What Maestro's SongStudyDAO asks (maestro-app .../outbound/metadata/study/song/) and the
# fields its domain classes (maestro-domain .../entities/metadata/study/) bind by name.
MAESTRO_ANALYSIS = {
    "analysisId",
    "analysisType",
    "analysisState",
    "updatedAt",
    "studyId",
    "files",
    "samples",
}
MAESTRO_FILE = {
    "objectId",
    "studyId",
    "analysisId",
    "fileName",
    "fileType",
    "fileMd5sum",
    "fileAccess",
    "dataType",
    "fileSize",
    "info",
}
MAESTRO_SAMPLE = {
    "sampleId",
    "specimenId",
    "submitterSampleId",
    "matchedNormalSubmitterSampleId",
    "sampleType",
    "donor",
    "specimen",
}
MAESTRO_DONOR = {"donorId", "submitterDonorId", "studyId", "gender", "info"}
MAESTRO_SPECIMEN = {
    "specimenId",
    "donorId",
    "submitterSpecimenId",
    "tumourNormalDesignation",
    "specimenTissueSource",
    "specimenType",
}
MAESTRO_PAGE = 25  # Maestro's DEFAULT_SONG_PAGE_LIMIT


def maestro_checks(a: dict, study: str) -> None:
    """An analysis as Maestro deserialises it: every field it binds, times it parses as a
    java.util.Date from Song's zone-less LocalDateTime text."""
    assert set(a) >= MAESTRO_ANALYSIS, MAESTRO_ANALYSIS - set(a)
    assert set(a["analysisType"]) == {"name", "version"}
    assert a["studyId"] == study and a["analysisState"] == "PUBLISHED"
    for key in ("updatedAt", "publishedAt", "firstPublishedAt"):
        local_time(a[key])
    for f in a["files"]:
        assert set(f) >= MAESTRO_FILE, MAESTRO_FILE - set(f)
        assert isinstance(f["fileSize"], int)
    for sample in a["samples"]:
        assert set(sample) >= MAESTRO_SAMPLE, MAESTRO_SAMPLE - set(sample)
        assert set(sample["donor"]) >= MAESTRO_DONOR
        assert set(sample["specimen"]) >= MAESTRO_SPECIMEN


def test_maestro_pulls_every_published_analysis(http, server, tmp_path):
    """Maestro's full reindex: /studies/all, then each study's analyses in pages of 25 by
    offset (`analysisStates=PUBLISHED&limit=25&offset=N`) until a page is empty; its single
    analysis index: /studies/{s}/analysis/{id}. 30 published and 2 unpublished analyses."""
    study = "MAESTRO"
    paths = []
    for i in range(32):
        path = tmp_path / f"m{i}" / f"maestro-{i}.bam"
        path.parent.mkdir()
        path.write_bytes(os.urandom(64))
        paths.append((study, [path]))
    published = publish_many(server.data_dir, paths[:30])
    with api.database(server.data_dir) as s:
        for i in (30, 31):
            metadata.submit(s, study, song_payload(study, [paths[i][1][0]], donor=f"M{i}"))
    assert study in http.get(f"{server.url}/studies/all").json()
    pulled: list[dict] = []
    offset = 0
    for _ in range(10):  # bounded: 30 analyses are 2 pages and an empty one
        url = (
            f"{server.url}/studies/{study}/analysis/paginated"
            f"?analysisStates=PUBLISHED&limit={MAESTRO_PAGE}&offset={offset}"
        )
        page = http.get(url).json()
        assert {"analyses", "totalAnalyses", "currentTotalAnalyses"} <= set(page)
        assert page["totalAnalyses"] == 30
        assert page["currentTotalAnalyses"] == len(page["analyses"])
        if not page["analyses"]:
            break
        pulled += page["analyses"]
        offset += MAESTRO_PAGE
    assert sorted(a["analysisId"] for a in pulled) == sorted(a for a, _ in published)
    for a in pulled:
        maestro_checks(a, study)
        one = http.get(f"{server.url}/studies/{study}/analysis/{a['analysisId']}").json()
        assert one == a
    song_error(
        http.get("/studies/NOPE/analysis/paginated?analysisStates=PUBLISHED&limit=25&offset=0"),
        404,
        "study.id.does.not.exist",
    )


# -- search ---------------------------------------------------------------------------------
def test_search_by_id(http, submitted):
    analysis = http.get(f"/studies/{STUDY}/analysis/{submitted.analysis_id}").json()
    sample = analysis["samples"][0]
    object_id = analysis["files"][0]["objectId"]
    search = f"/studies/{STUDY}/analysis/search/id"
    for params in (
        {"sampleId": sample["sampleId"]},
        {"donorId": sample["donor"]["donorId"]},
        {"fileId": object_id},
    ):
        r = http.get(search, params=params)
        assert r.status_code == 200, (params, r.text)
        assert submitted.analysis_id in {a["analysisId"] for a in r.json()}, params
    by_file = http.get(search, params={"fileId": object_id}).json()
    assert [a["analysisId"] for a in by_file] == [submitted.analysis_id]
    assert http.get(search, params={"donorId": "DO000000000000"}).json() == []
    song_error(
        http.get("/studies/NOPE/analysis/search/id", params={"fileId": object_id}),
        404,
        "study.id.does.not.exist",
    )


def test_search_by_id_matches_as_song_a_case_insensitive_regex(http, submitted):
    """Song's idSearch: each term a regular expression (`~*`: anywhere, any case), in the
    GET's parameters (song-client search, the SDKs) or the POST's IdSearchRequest."""
    found = analysis(http, submitted.analysis_id)
    sample, bam = found["samples"][0], found["files"][0]
    search = f"/studies/{STUDY}/analysis/search/id"

    def ids(response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        return {a["analysisId"] for a in response.json()}

    for params in (
        {"donorId": sample["donor"]["donorId"].lower()},
        {"sampleId": "^" + sample["sampleId"][:6].upper()},  # anchored, any case
        {"fileId": bam["objectId"][4:20].upper()},
        {"submitterDonorId": "^d1$", "submitterSampleId": "D1-S"},
        {"submitterSpecimenId": "^D1-SP$", "specimenId": sample["specimenId"]},
    ):
        assert submitted.analysis_id in ids(http.get(search, params=params)), params
    exact = http.get(search, params={"submitterDonorId": "^d1$"}).json()
    assert {s["donor"]["submitterDonorId"] for a in exact for s in a["samples"]} == {"D1"}
    for body in (
        {"objectId": bam["objectId"].upper()},
        {"submitterDonorIds": "^D1$", "donorId": None},
        {"submitterSpecimenIds": "^d1-sp$"},
        {},
    ):
        assert submitted.analysis_id in ids(http.post(search, json=body)), body
    assert ids(http.post(search, json={"submitterDonorIds": "^no-such-donor$"})) == set()
    for bad in (".*.*x", "(a+)+$", "[", "(x)\\1"):
        song_error(http.get(search, params={"donorId": bad}), 400, "search.term.syntax")
        song_error(http.post(search, json={"sampleId": bad}), 400, "search.term.syntax")
    song_error(http.post(search, json=["DO1"]), 400, "malformed.parameter")
    song_error(
        http.post("/studies/NOPE/analysis/search/id", json={}), 404, "study.id.does.not.exist"
    )


def test_search_by_info(http, submitted):
    search = f"/studies/{STUDY}/analysis/search/info"
    r = http.get(search, params={"batch": "b-42", "includeInfo": "true"})
    assert r.status_code == 200
    assert r.json() == [
        {"analysisId": submitted.analysis_id, "info": {"batch": "b-42", "lab": "north"}}
    ]
    # the SDK sends Python's bool spelling
    bare = http.get(search, params={"includeInfo": "False", "batch": "b-42", "lab": "north"})
    assert bare.json() == [{"analysisId": submitted.analysis_id}]
    assert http.get(search, params={"batch": "b-43"}).json() == []


# -- files ----------------------------------------------------------------------------------
def test_get_file(http, admin, submitted, other_study):
    object_id = object_ids(http, submitted.analysis_id)["x.bam"]
    r = http.get(f"/studies/{STUDY}/files/{object_id}")
    assert r.status_code == 200
    assert r.json()["fileName"] == "x.bam"
    song_error(http.get(f"/studies/{STUDY}/files/{uuid.uuid4()}"), 404, "file.not.found")
    # Song's checkFileAndStudyRelated, before a read or an update
    elsewhere = f"/studies/{other_study}/files/{object_id}"
    for r in (http.get(elsewhere), http.put(elsewhere, json={"dataType": "x"}, headers=admin)):
        song_error(r, 400, "entity.not.related.to.study", object_id, other_study, STUDY)
    song_error(http.get(f"/studies/NOSUCHSTUDY/files/{object_id}"), 404, "study.id.does.not.exist")
    assert http.get(f"/studies/{STUDY}/files/{object_id}").json()["dataType"] != "x"


def test_update_file_info(http, server, writer, tmp_path):
    sub = submit(http, writer, tmp_path, {"u.bam": 700}, donor="D5")
    object_id = object_ids(http, sub.analysis_id)["u.bam"]
    url = f"/studies/{STUDY}/files/{object_id}"
    r = http.put(url, json={"info": {"qc": "passed"}, "dataType": "Reads"}, headers=bearer(writer))
    assert r.status_code == 200, r.text
    assert r.json()["unpublishedAnalysis"] is False
    got = http.get(url).json()
    assert got["info"] == {"qc": "passed"}
    assert got["dataType"] == "Reads"
    assert audit_actions(server, object_id, 1)[0] == ("file.update", "granted", 200)
    song_error(http.put(url, json={"info": {"qc": "x"}}), 401, "unauthorized.token")
    song_error(
        http.put(url, json={"fileMd5sum": "abc"}, headers=bearer(writer)), 400, None, "fileMd5sum"
    )
    song_error(
        http.put(url, json={"fileAccess": "public"}, headers=bearer(writer)),
        400,
        None,
        "fileAccess",
    )
    song_error(
        http.put(url, json={"fileName": 3, "objectId": 4, "bogus": 1}, headers=bearer(writer)),
        400,
        None,
        "bogus",
    )
    assert http.get(url).json()["info"] == {"qc": "passed"}


def test_update_file_md5_unpublishes(http, server, writer, tmp_path):
    sub = _published(http, server, writer, tmp_path, "D6", {"m.bam": 1500})
    object_id = object_ids(http, sub.analysis_id)["m.bam"]
    new_md5 = md5(b"different content")
    r = http.put(
        f"/studies/{STUDY}/files/{object_id}", json={"fileMd5sum": new_md5}, headers=bearer(writer)
    )
    assert r.status_code == 200, r.text
    assert r.json()["unpublishedAnalysis"] is True
    assert r.json()["originalAnalysisState"] in ("PUBLISHED", "UNPUBLISHED")
    assert state(http, sub.analysis_id) == "UNPUBLISHED"
    assert http.get(f"/studies/{STUDY}/files/{object_id}").json()["fileMd5sum"] == new_md5
    # storage still holds the old bytes: publishing now is refused, naming the checksum
    song_error(
        http.put(f"/studies/{STUDY}/analysis/publish/{sub.analysis_id}", headers=bearer(writer)),
        409,
        "mismatching.storage.object.checksums",
        "m.bam",
    )


def test_update_file_response_uses_song_update_types(http, writer, tmp_path):
    sub = submit(http, writer, tmp_path, {"t.bam": 900}, donor="D7")
    object_id = object_ids(http, sub.analysis_id)["t.bam"]
    url = f"/studies/{STUDY}/files/{object_id}"
    meta = http.put(url, json={"info": {"k": "v"}}, headers=bearer(writer)).json()
    assert meta["fileUpdateType"] == "METADATA_UPDATE"
    assert meta["originalFile"]["objectId"] == object_id
    content = http.put(url, json={"fileSize": 901}, headers=bearer(writer)).json()
    assert content["fileUpdateType"] == "CONTENT_UPDATE"
    same = http.put(url, json={"fileSize": 901}, headers=bearer(writer)).json()
    assert same["fileUpdateType"] == "NO_UPDATE"


# -- legacy entities ------------------------------------------------------------------------
def test_entities_filters(http, submitted):
    ids = object_ids(http, submitted.analysis_id)
    for params, expected in [
        ({"gnosId": submitted.analysis_id}, set(ids.values())),
        ({"analysisId": submitted.analysis_id}, set(ids.values())),
        ({"gnosId": submitted.analysis_id, "fileName": "x.bam.bai"}, {ids["x.bam.bai"]}),
        ({"id": ids["x.bam"]}, {ids["x.bam"]}),
        ({"gnosId": submitted.analysis_id, "access": "open"}, set()),
        ({"projectCode": "NOPE"}, set()),
    ]:
        r = http.get("/entities", params=params)
        assert r.status_code == 200, r.text
        assert {e["id"] for e in r.json()["content"]} == expected, params
    everything = http.get("/entities", params={"projectCode": STUDY, "size": 2000}).json()
    assert set(ids.values()) <= {e["id"] for e in everything["content"]}
    assert all(e["projectCode"] == STUDY for e in everything["content"])


def test_entities_fields(http, submitted):
    repeated = http.get(
        "/entities",
        params=[("fields", "id"), ("fields", "fileName"), ("gnosId", submitted.analysis_id)],
    )
    comma = http.get("/entities", params={"fields": "id,fileName", "gnosId": submitted.analysis_id})
    for r in (repeated, comma):
        assert r.status_code == 200, r.text
        content = r.json()["content"]
        assert len(content) == 2
        assert all(set(e) == {"id", "fileName"} for e in content)
    assert repeated.json()["content"] == comma.json()["content"]


def test_entities_paging(http, submitted):
    total = http.get("/entities", params={"size": 2000}).json()["totalElements"]
    assert total >= 2
    seen = []
    for page in range(total + 1):  # bounded
        body = http.get("/entities", params={"page": page, "size": 1}).json()
        assert body["totalElements"] == total
        assert body["number"] == page and body["size"] == 1
        seen += [e["id"] for e in body["content"]]
        if body["last"]:
            break
    assert len(seen) == total == len(set(seen))
    assert seen == sorted(seen)
    past = http.get("/entities", params={"page": total + 5, "size": 1}).json()
    assert past["content"] == []


def test_entities_by_id_range_walk_everything_once_in_order(http, submitted):
    """pyscore's keyset extension (`from=` inclusive, `before=` exclusive): ranges side by
    side and pages from the last id cover every entity once, in order, without counts."""
    every = [e["id"] for e in http.get("/entities", params={"size": 2000}).json()["content"]]
    assert len(every) >= 2
    middle = every[len(every) // 2]
    walked = []
    for start, before in (("", middle), (middle, None)):
        for _ in range(len(every) + 1):  # bounded
            # pages of 2: `from` is inclusive, so each page after the first repeats one id
            params = {"from": start, "size": 2, "fields": "id,gnosId"}
            if before is not None:
                params["before"] = before
            r = http.get("/entities", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert "totalElements" not in body
            assert all(set(e) == {"id", "gnosId"} for e in body["content"])
            ids = [e["id"] for e in body["content"]]
            walked += [i for i in ids if not walked or i > walked[-1]]  # the repeat: once
            if body["last"]:
                break
            start = ids[-1]
    assert walked == every


@pytest.mark.parametrize(
    "params, error_id, mention",
    [
        ({"bogus": "1"}, "illegal.query.parameter", "bogus"),
        ({"size": "0"}, "malformed.parameter", "size"),
        ({"page": "-1"}, "malformed.parameter", "page"),
        ({"page": "abc"}, "malformed.parameter", "page"),
    ],
)
def test_entities_bad_parameters(http, params, error_id, mention):
    song_error(http.get("/entities", params=params), 400, error_id, mention)


def test_entity_by_id(http, submitted):
    object_id = object_ids(http, submitted.analysis_id)["x.bam.bai"]
    r = http.get(f"/entities/{object_id}")
    assert r.status_code == 200
    assert r.json()["fileName"] == "x.bam.bai"
    assert r.json()["gnosId"] == submitted.analysis_id
    missing = str(uuid.uuid4())
    song_error(http.get(f"/entities/{missing}"), 404, "legacy.entity.not.found", missing)


# -- every other error is Song-shaped JSON too ----------------------------------------------
@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/no/such/route", 404),
        ("GET", "/studies/SONG/analysis/x/y/z/w", 404),
        ("POST", "/nothing-here", 404),
        ("DELETE", "/isAlive", 405),
        ("GET", "/submit/SONG", 405),
        ("PATCH", "/studies/SONG", 405),
    ],
)
def test_unknown_routes_and_methods_answer_song_json(http, method, path, status):
    song_error(http.request(method, path), status)


def test_sdk_style_headers_accepted(http, submitted):
    """The SDK sends Content-Type: application/json even on GETs and body-less PUTs."""
    h = {"Content-Type": "application/json"}
    assert (
        http.get(f"/studies/{STUDY}/analysis/{submitted.analysis_id}", headers=h).json()[
            "analysisId"
        ]
        == submitted.analysis_id
    )
    # body-less PUT with a JSON content type and no token: refused for auth, not for the body
    song_error(
        http.put(f"/studies/{STUDY}/analysis/publish/{submitted.analysis_id}", headers=h),
        401,
        "unauthorized.token",
    )
