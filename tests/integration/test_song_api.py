"""The Song-compatible metadata API over real HTTP, against a real score-server.

One platform for the whole module (study SONG). Tests that change an analysis's state submit
their own analysis, so the tests do not depend on their order.
"""

from __future__ import annotations

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

from pyscore.server.metadata.ids import song_id
from tests import api
from tests.api import bearer, upload
from tests.conftest import SERVER, Server, database_write_locked, init_server, sqlite_only
from tests.publish import md5, song_payload

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
        deadline = time.monotonic() + 20
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
    assert r.text.strip().strip('"') == study
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
    names = [t["name"] for t in body["resultSet"]]
    assert {"sequencingRead", "variantCall"} <= set(names)
    assert body["count"] >= len(names)
    assert all("schema" not in t for t in body["resultSet"])  # hideSchema defaults to true
    shown = http.get("/schemas", params={"hideSchema": "false", "names": "sequencingRead"})
    assert [t["name"] for t in shown.json()["resultSet"]] == ["sequencingRead"]
    assert "experiment" in shown.json()["resultSet"][0]["schema"]["properties"]


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
    assert [(t["name"], t["version"]) for t in listed] == [("qcMetrics", 2)]


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
    song_error(http.post("/schemas", json=body, headers=bearer(writer)), 403, None, "score.ADMIN")
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


def test_analysis_of_another_study_is_not_found_there(http, admin, submitted):
    http.post("/studies/OTHERSTUDY/", headers=admin, json={"studyId": "OTHERSTUDY"})
    song_error(
        http.get(f"/studies/OTHERSTUDY/analysis/{submitted.analysis_id}"),
        404,
        "analysis.id.not.found",
        submitted.analysis_id,
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
    assert [a["analysisId"] for a in suppressed] == [sub.analysis_id]


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
def test_get_file(http, submitted):
    object_id = object_ids(http, submitted.analysis_id)["x.bam"]
    r = http.get(f"/studies/{STUDY}/files/{object_id}")
    assert r.status_code == 200
    assert r.json()["fileName"] == "x.bam"
    song_error(http.get(f"/studies/OTHERSTUDY/files/{object_id}"), 404, None, object_id)
    song_error(http.get(f"/studies/{STUDY}/files/{uuid.uuid4()}"), 404, "file.not.found")


def test_update_file_info(http, writer, tmp_path):
    sub = submit(http, writer, tmp_path, {"u.bam": 700}, donor="D5")
    object_id = object_ids(http, sub.analysis_id)["u.bam"]
    url = f"/studies/{STUDY}/files/{object_id}"
    r = http.put(url, json={"info": {"qc": "passed"}, "dataType": "Reads"}, headers=bearer(writer))
    assert r.status_code == 200, r.text
    assert r.json()["unpublishedAnalysis"] is False
    got = http.get(url).json()
    assert got["info"] == {"qc": "passed"}
    assert got["dataType"] == "Reads"
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
