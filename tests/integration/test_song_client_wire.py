"""SONG's own command line, song-client (overture-stack/SONG at 434ddf2), replayed over HTTP
against a running server: each command's requests exactly as its Java code sends them
(song-client/.../command/*Command.java over song-java-sdk's SongApi, Endpoint and
DefaultRestClient), and what the Java side parses of each answer: the status (RestTemplate
takes 2xx), and the fields of the song-core classes Jackson binds (SubmitResponse, FileDTO,
Analysis, AnalysisType, PageDTO, ExportedPayload, FileUpdateResponse; enums by name, times
as LocalDateTime), or a SongError (ServerResponseErrorHandler) for anything else.

Every request carries what DefaultClientHttpRequestInterceptor sets, whatever its method or
body: `Accept` and `Content-Type` of `application/json;charset=UTF-8` and the configured
token as a bearer. A String body (a payload file's text) goes as it is; a command without
one (publish, unpublish, suppress) sends an empty entity. Query parameters come from
RequestParamBuilder: collections joined by commas, in no set order (a Set of `k=v`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.api import song_error, upload
from tests.conftest import Server, init_server
from tests.publish import md5, song_payload

STUDY = "SCLI"
JSON_UTF8 = "application/json;charset=UTF-8"  # Spring's APPLICATION_JSON_UTF8
AGENT = "Apache-HttpClient/4.5.13 (Java/11.0.22)"
LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?")  # no zone
STATES = ("PUBLISHED", "UNPUBLISHED", "SUPPRESSED")  # AnalysisStates
FILE_UPDATE_TYPES = ("NO_UPDATE", "CONTENT_UPDATE", "METADATA_UPDATE")


@dataclass
class World:
    server: Server
    token: str  # what `accessToken` holds: a study writer's


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    with init_server(tmp_path_factory.mktemp("song-client") / "data") as server:
        r = httpx.post(
            f"{server.url}/studies/{STUDY}/",
            json={"studyId": STUDY},
            headers={"Authorization": f"Bearer {server.admin_token}"},
        )
        assert r.status_code == 200, r.text
        yield World(server, server.token(f"PROGRAMDATA-{STUDY}.WRITE"))


def song_client(
    world: World,
    method: str,
    path: str,
    query: dict[str, Any] | None = None,
    body: str | None = None,
    token: str | None = None,
) -> httpx.Response:
    """One request as song-client sends it (see the module's docstring). `query`: the
    parameters RequestParamBuilder would add (None values left out, lists comma-joined,
    booleans as Java prints them)."""
    params = {
        key: ",".join(map(str, value))
        if isinstance(value, list)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
        for key, value in (query or {}).items()
        if value is not None and value != []
    }
    url = world.server.url + path + (f"?{urlencode(params, safe=',')}" if params else "")
    headers = {
        "Accept": JSON_UTF8,
        "Content-Type": JSON_UTF8,
        "Authorization": f"Bearer {token or world.token}",
        "User-Agent": AGENT,
    }
    empty = b"" if method in ("PUT", "POST", "PATCH") else None
    content = body.encode() if body is not None else empty
    return httpx.request(method, url, headers=headers, content=content, timeout=30)


def jackson(r: httpx.Response, status: int = 200) -> Any:
    """The JSON an answer's body holds, once RestTemplate takes its status (2xx)."""
    assert r.status_code == status, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


def is_long(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def local_time(value: Any, nullable: bool = False) -> None:
    if nullable and value is None:
        return
    assert isinstance(value, str) and LOCAL_TIME.fullmatch(value), value


def check_file(f: dict, study: str = STUDY) -> None:
    """FileDTO, as song-client's manifest command reads it (objectId, fileName, fileMd5sum)."""
    for key in ("objectId", "analysisId", "fileName", "fileType", "fileMd5sum", "fileAccess"):
        assert isinstance(f[key], str), (key, f)
    assert f["studyId"] == study and is_long(f["fileSize"])
    assert f["fileAccess"] in ("open", "controlled")


def check_analysis(a: dict) -> None:
    """song-core's Analysis: states by name, times as LocalDateTime, samples as
    CompositeSample (donor and specimen inside), files as FileDTO, the rest as its data."""
    assert isinstance(a["analysisId"], str) and a["studyId"] == STUDY
    assert a["analysisState"] in STATES
    assert isinstance(a["analysisType"]["name"], str) and is_long(a["analysisType"]["version"])
    for key in ("createdAt", "updatedAt"):
        local_time(a[key])
    for key in ("firstPublishedAt", "publishedAt"):
        local_time(a.get(key), nullable=True)
    for change in a["analysisStateHistory"]:
        assert change["initialState"] in STATES and change["updatedState"] in STATES
        local_time(change["updatedAt"])
    for sample in a["samples"]:
        assert isinstance(sample["sampleId"], str) and isinstance(sample["specimenId"], str)
        assert sample["specimen"]["specimenId"] == sample["specimenId"]
        assert sample["donor"]["donorId"] == sample["specimen"]["donorId"]
        assert sample["donor"]["studyId"] == STUDY
    for f in a["files"]:
        check_file(f)


def check_analysis_type(t: dict, schema: bool = True) -> None:
    """AnalysisType: name, version (Integer), createdAt (LocalDateTime), options (null or
    {fileTypes}), schema (a JSON object, left out with hideSchema)."""
    assert isinstance(t["name"], str) and is_long(t["version"])
    local_time(t.get("createdAt"), nullable=True)
    options = t.get("options")
    assert options is None or isinstance(options.get("fileTypes", []), list), options
    assert isinstance(t["schema"], dict) if schema else "schema" not in t, t


def payload_file(tmp_path: Path, donor: str, files: dict[str, bytes]) -> str:
    """A payload file's text, as `song-client submit -f` reads and sends it."""
    path = tmp_path / f"{donor}.json"
    path.write_text(json.dumps(song_payload(STUDY, files, donor=donor), indent=2))
    return path.read_text()


def submitted(world: World, tmp_path: Path, donor: str) -> tuple[str, dict[str, bytes]]:
    """`song-client submit -f <payload>`: the analysis id it prints, and the files' bytes."""
    files = {f"{donor}.bam": f"reads of {donor}".encode(), f"{donor}.bam.bai": b"index"}
    r = song_client(world, "POST", f"/submit/{STUDY}", body=payload_file(tmp_path, donor, files))
    answer = jackson(r)
    assert set(answer) == {"analysisId", "status"} and answer["status"] == "OK"  # SubmitResponse
    return answer["analysisId"], files


def test_ping_is_a_boolean_string(world):
    """`song-client ping`: GET /isAlive read as a String, Booleans.convertToBoolean."""
    r = song_client(world, "GET", "/isAlive")
    assert r.status_code == 200 and r.text.strip().lower() == "true"


def test_submit_manifest_publish_unpublish_suppress_and_search(world, tmp_path):
    """The commands of a submission's life, in the order a submitter runs them."""
    analysis_id, files = submitted(world, tmp_path, "DFLOW")

    # `manifest -a <id> -d <dir>`: the analysis's files (ManifestClient: objectId, fileName,
    # fileMd5sum, one line each)
    listed = jackson(song_client(world, "GET", f"/studies/{STUDY}/analysis/{analysis_id}/files"))
    for f in listed:
        check_file(f)
    assert {f["fileName"]: f["fileMd5sum"] for f in listed} == {
        name: md5(data) for name, data in files.items()
    }
    with httpx.Client(base_url=world.server.url, timeout=30) as http:  # score-client's part
        for f in listed:
            upload(
                http,
                f["objectId"],
                files[f["fileName"]],
                {"Authorization": f"Bearer {world.token}"},
            )

    def search() -> dict:  # `search -a <id>`
        found = jackson(song_client(world, "GET", f"/studies/{STUDY}/analysis/{analysis_id}"))
        check_analysis(found)
        return found

    assert search()["analysisState"] == "UNPUBLISHED"
    for command, query, said, state in (
        ("publish", {"ignoreUndefinedMd5": False}, "successfully published", "PUBLISHED"),
        ("unpublish", None, "successfully unpublished", "UNPUBLISHED"),
        ("publish", {"ignoreUndefinedMd5": True}, "successfully published", "PUBLISHED"),
        ("suppress", None, "was suppressed", "SUPPRESSED"),
    ):
        path = f"/studies/{STUDY}/analysis/{command}/{analysis_id}"
        r = song_client(world, "PUT", path, query)
        # read as a String and printed as it is: SONG's GenericMessage
        assert jackson(r) == {"message": f"AnalysisId {analysis_id} {said}"}, command
        assert search()["analysisState"] == state
    history = search()["analysisStateHistory"]
    assert [(h["initialState"], h["updatedState"]) for h in history] == [
        ("UNPUBLISHED", "PUBLISHED"),
        ("PUBLISHED", "UNPUBLISHED"),
        ("UNPUBLISHED", "PUBLISHED"),
        ("PUBLISHED", "SUPPRESSED"),
    ]


def test_search_by_ids(world, tmp_path):
    """`search -sa/-sp/-d/-f`: GET .../search/id with the given ids, read as List<Analysis>."""
    analysis_id, _ = submitted(world, tmp_path, "DSEARCH")
    found = jackson(song_client(world, "GET", f"/studies/{STUDY}/analysis/{analysis_id}"))
    sample = found["samples"][0]
    object_id = found["files"][0]["objectId"]
    for query in (
        {"sampleId": sample["sampleId"]},
        {"specimenId": sample["specimenId"], "donorId": sample["donor"]["donorId"]},
        {"fileId": object_id},
        {"donorId": sample["donor"]["donorId"], "fileId": object_id},
    ):
        r = song_client(world, "GET", f"/studies/{STUDY}/analysis/search/id", query)
        hits = jackson(r)
        for hit in hits:
            check_analysis(hit)
        assert [h["analysisId"] for h in hits] == [analysis_id], query


def test_export_by_study_and_by_analysis_ids(world, tmp_path):
    """`export -s <study>` and `export -a <id> <id>` (ids comma-joined in the path), read as
    List<ExportedPayload>: {studyId, payloads}, each payload submittable again."""
    first, _ = submitted(world, tmp_path, "DEXP1")
    second, _ = submitted(world, tmp_path, "DEXP2")
    by_study = jackson(song_client(world, "GET", f"/export/studies/{STUDY}"))
    assert [list(e) for e in by_study] == [["studyId", "payloads"]]
    assert by_study[0]["studyId"] == STUDY and len(by_study[0]["payloads"]) >= 2
    by_ids = jackson(song_client(world, "GET", f"/export/analysis/{first},{second}"))
    assert [(e["studyId"], len(e["payloads"])) for e in by_ids] == [(STUDY, 2)]
    donors = {p["samples"][0]["donor"]["submitterDonorId"] for p in by_ids[0]["payloads"]}
    assert donors == {"DEXP1", "DEXP2"}
    for payload in by_ids[0]["payloads"]:
        assert "analysisId" not in payload and payload["studyId"] == STUDY


def test_get_and_list_analysis_types(world):
    """`get-analysis-type -n <name> [-v <n>] [-u]` and `list-analysis-types [-n ...] [-v ...]
    [-hs] [-u] [-so ...] [-sd ASC|DESC] [-o n] [-l n]`: hideSchema, unrenderedOnly and
    sortOrder are always sent (primitives and a default); the rest only when given."""
    server = world.server
    registered = {
        "name": "cliType",
        "schema": {
            "type": "object",
            "required": ["experiment"],
            "properties": {"experiment": {"type": "object"}, "tool": {"type": "string"}},
        },
    }
    r = song_client(
        world, "POST", "/schemas", body=json.dumps(registered), token=server.admin_token
    )
    check_analysis_type(jackson(r))  # `register-analysis-type -f <file>`: AnalysisType
    again = song_client(
        world, "POST", "/schemas", body=json.dumps(registered), token=server.admin_token
    )
    assert jackson(again)["version"] == 2

    latest = jackson(song_client(world, "GET", "/schemas/cliType", {"unrenderedOnly": False}))
    check_analysis_type(latest)
    assert (latest["name"], latest["version"]) == ("cliType", 2)
    assert "samples" in latest["schema"]["properties"]  # rendered: the base merged in
    one = song_client(world, "GET", "/schemas/cliType", {"version": 1, "unrenderedOnly": True})
    unrendered = jackson(one)
    check_analysis_type(unrendered)
    assert unrendered["version"] == 1 and unrendered["schema"] == registered["schema"]
    song_error(
        song_client(world, "GET", "/schemas/noSuchType", {"unrenderedOnly": False}),
        404,
        "analysis.type.not.found",
    )

    def listed(**query: Any) -> dict:
        base = {"hideSchema": False, "unrenderedOnly": False, "sortOrder": "DESC"}
        page = jackson(song_client(world, "GET", "/schemas", {**base, **query}))
        assert set(page) == {"limit", "offset", "count", "resultSet"}  # PageDTO
        assert all(is_long(page[k]) for k in ("limit", "offset", "count"))
        for t in page["resultSet"]:
            check_analysis_type(t, schema=not query.get("hideSchema"))
        return page

    every = listed()
    assert every["count"] >= 4  # the bundled types and both of ours
    page = listed(names=["cliType", "sequencingRead"], sort=["name", "version"], sortOrder="ASC")
    rows = [(t["name"], t["version"]) for t in page["resultSet"]]
    assert rows == [("cliType", 1), ("cliType", 2), ("sequencingRead", 1)]
    page = listed(
        names=["cliType", "sequencingRead"],
        sort=["name", "version"],
        sortOrder="ASC",
        offset=1,
        limit=1,
    )
    assert [(t["name"], t["version"]) for t in page["resultSet"]] == [("cliType", 2)]
    assert (page["offset"], page["limit"], page["count"]) == (1, 1, 3)
    page = listed(names=["cliType"], versions=[1], hideSchema=True, unrenderedOnly=True)
    assert [(t["name"], t["version"]) for t in page["resultSet"]] == [("cliType", 1)]


def test_update_file_and_update_analysis(world, tmp_path):
    """`update-file --object-id <id> -d <dataType> ...`: a FileUpdateRequest holding only
    the options given (NON_NULL), answered by a FileUpdateResponse; `update-analysis -a <id>
    -f <file>`: PUT of the file's text, the answer (SONG's void) not read."""
    analysis_id, _ = submitted(world, tmp_path, "DUPD")
    found = jackson(song_client(world, "GET", f"/studies/{STUDY}/analysis/{analysis_id}"))
    f = found["files"][0]
    body = json.dumps({"dataType": "Curated Reads", "info": {"checked": True}})
    answer = jackson(
        song_client(world, "PUT", f"/studies/{STUDY}/files/{f['objectId']}", body=body)
    )
    assert answer["fileUpdateType"] in FILE_UPDATE_TYPES
    assert answer["fileUpdateType"] == "METADATA_UPDATE"
    assert isinstance(answer["message"], str) and isinstance(answer["unpublishedAnalysis"], bool)
    assert answer["originalAnalysisState"] in STATES
    check_file(answer["originalFile"])
    assert answer["originalFile"]["dataType"] == f["dataType"]
    now = jackson(song_client(world, "GET", f"/studies/{STUDY}/files/{f['objectId']}"))
    assert now["dataType"] == "Curated Reads" and now["info"] == {"checked": True}

    update = {
        "analysisType": {"name": "sequencingRead"},
        "experiment": {"libraryStrategy": "WXS"},
    }
    r = song_client(
        world, "PUT", f"/studies/{STUDY}/analysis/{analysis_id}", body=json.dumps(update)
    )
    assert r.status_code == 200, r.text
    after = jackson(song_client(world, "GET", f"/studies/{STUDY}/analysis/{analysis_id}"))
    check_analysis(after)
    assert after["experiment"] == {"libraryStrategy": "WXS"}


def test_refusals_are_song_errors(world, tmp_path):
    """What ServerResponseErrorHandler parses of a refusal: a SongError, its errorId."""
    unknown = "00000000-0000-0000-0000-000000000000"
    analysis_id, _ = submitted(world, tmp_path, "DERR")
    reader = world.server.token(f"PROGRAMDATA-{STUDY}.READ")
    for (method, path, query, body, token), status, error_id in (
        (
            ("PUT", f"/studies/{STUDY}/analysis/publish/{unknown}", None, None, None),
            404,
            "analysis.id.not.found",
        ),
        (
            ("PUT", f"/studies/{STUDY}/analysis/publish/{analysis_id}", None, None, reader),
            403,
            "forbidden.token",
        ),
        (
            ("PUT", f"/studies/{STUDY}/analysis/suppress/{analysis_id}", None, None, "not-a-token"),
            401,
            "unauthorized.token",
        ),
        (
            ("POST", "/submit/NOSUCHSTUDY", None, "{}", world.server.admin_token),
            404,
            "study.id.does.not.exist",
        ),
        (("POST", f"/submit/{STUDY}", None, "{not json", None), 422, "payload.parsing"),
        (
            ("GET", f"/studies/{STUDY}/analysis/{unknown}", None, None, None),
            404,
            "analysis.id.not.found",
        ),
        (("GET", f"/export/analysis/{unknown}", None, None, None), 404, "analysis.id.not.found"),
        (
            ("PUT", f"/studies/{STUDY}/files/{unknown}", None, '{"dataType": "x"}', None),
            404,
            "file.not.found",
        ),
    ):
        song_error(song_client(world, method, path, query, body, token), status, error_id)
