"""The overture-song 5.0.0 Python SDK, unchanged, against a real score-server: create a study,
submit, list files, write the upload manifest, upload (storage API), publish."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.api import bearer, upload
from tests.conftest import init_server
from tests.publish import md5, song_payload

pytest.importorskip("overture_song", reason="pip install overture-song==5.0.0")


def _py311_compat_shim() -> None:
    """overture-song 5.0.0 does not import on Python >= 3.11: entities.py uses an AnalysisType
    instance (an unhashable dataclass) as a dataclass field default, which 3.11 rejects as a
    mutable default. While overture_song.entities loads, create AnalysisType alone with
    unsafe_hash=True; everything else behaves as on 3.10."""
    if sys.version_info < (3, 11) or "overture_song.entities" in sys.modules:
        return
    original = dataclasses.dataclass

    def patched(cls=None, /, **kwargs):
        def wrap(c):
            if c.__module__ == "overture_song.entities" and c.__name__ == "AnalysisType":
                return original(c, **dict(kwargs, unsafe_hash=True))
            return original(c, **kwargs)

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = patched
    try:
        import overture_song.entities  # noqa: F401  (binds `dataclass` at import time)
    finally:
        dataclasses.dataclass = original


_py311_compat_shim()

from overture_song.client import Api, ManifestClient, StudyClient  # noqa: E402
from overture_song.entities import Study  # noqa: E402
from overture_song.model import ApiConfig, FileUpdateRequest, SongError  # noqa: E402

STUDY = "SDKSTUDY"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with init_server(tmp_path_factory.mktemp("sdk") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server) -> Api:
    return Api(ApiConfig(server.url, STUDY, server.admin_token))


def upload_from_manifest(server, manifest: Path) -> None:
    """Upload every file the SDK's manifest lists, through the storage API."""
    lines = manifest.read_text().split("\n")[1:]  # first line: '<analysisId>\t\t'
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for line in lines:
            object_id, path, checksum = line.split("\t")
            data = Path(path).read_bytes()
            assert md5(data) == checksum
            upload(http, object_id, data, bearer(server.admin_token))


def test_study_client_has_is_false_for_a_missing_study(api):
    assert api.is_alive() is True
    assert StudyClient(api).has("NO-SUCH-STUDY") is False


def test_sdk_flow_create_submit_manifest_upload_publish(server, api, tmp_path):
    studies = StudyClient(api)
    assert studies.has(STUDY) is False
    created = api.save_study(
        Study.create(STUDY, name="SDK study", description="made by the SDK", organization="pyscore")
    )
    assert created.message == f"Successfully created study '{STUDY}'"  # Song's GenericMessage
    assert studies.has(STUDY) is True
    study = studies.read(STUDY)
    assert (study.studyId, study.name, study.organization) == (STUDY, "SDK study", "pyscore")
    assert STUDY in api.get_all_studies()

    source = tmp_path / "upload"
    source.mkdir()
    files = {"x.bam": os.urandom(50_000), "x.bam.bai": os.urandom(700)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    submitted = api.submit(
        song_payload(
            STUDY,
            files,
            donor="SDK-D1",
            info={"pipeline": "sdk-test"},
            experiment={"libraryStrategy": "WGS", "aligned": True, "pairedEnd": True},
        )
    )
    analysis_id = submitted.analysisId
    assert analysis_id and submitted.status == "OK"
    assert api.get_analysis(analysis_id).analysisState == "UNPUBLISHED"

    listed = api.get_analysis_files(analysis_id)
    by_name = {f.fileName: f for f in listed}
    assert set(by_name) == set(files)
    for name, data in files.items():
        assert by_name[name].fileMd5sum == md5(data)
        assert by_name[name].fileSize == len(data)
        assert by_name[name].analysisId == analysis_id

    manifest = tmp_path / "out" / "manifest.txt"
    ManifestClient(api).write_manifest(analysis_id, str(source), str(manifest))
    lines = manifest.read_text().split("\n")
    assert lines[0] == f"{analysis_id}\t\t"
    rows = sorted(line.split("\t") for line in lines[1:])
    assert rows == sorted(
        [by_name[n].objectId, os.path.realpath(source / n), md5(d)] for n, d in files.items()
    )

    with pytest.raises(SongError) as refused:
        api.publish(analysis_id)
    assert refused.value.errorId == "missing.storage.objects"
    assert "x.bam" in refused.value.message

    upload_from_manifest(server, manifest)
    published = api.publish(analysis_id)
    assert published.message == f"AnalysisId {analysis_id} successfully published"
    assert api.get_analysis(analysis_id).analysisState == "PUBLISHED"

    # a reader downloads what was published
    reader = server.token(f"PROGRAMDATA-{STUDY}.READ")
    spec = httpx.get(
        f"{server.url}/download/{by_name['x.bam'].objectId}", headers=bearer(reader)
    ).json()
    got = b"".join(
        httpx.get(
            p["url"], headers={"Range": f"bytes={p['offset']}-{p['offset'] + p['partSize'] - 1}"}
        ).content
        for p in sorted(spec["parts"], key=lambda p: p["offset"])
    )
    assert got == files["x.bam"]


def test_sdk_reads_searches_and_updates(api, server):
    """The SDK's other calls, on the study the flow above made (skipped alone)."""
    if not StudyClient(api).has(STUDY):
        pytest.skip("needs the study of test_sdk_flow_create_submit_manifest_upload_publish")
    analyses = api.id_search(donor_id=None)
    assert analyses, "the flow's analysis"
    analysis = analyses[0]
    bam = next(f for f in analysis.files if f.fileName == "x.bam")
    by_file = api.id_search(file_id=bam.objectId)
    assert [a.analysisId for a in by_file] == [analysis.analysisId]
    by_info = api.info_search(True, pipeline="sdk-test")
    assert [a.analysisId for a in by_info] == [analysis.analysisId]
    assert by_info[0].info.to_dict() == {"pipeline": "sdk-test"}

    names = {t.name for t in api.list_schemas().resultSet}
    assert "sequencingRead" in names
    assert api.get_schema("sequencingRead").name == "sequencingRead"
    entire = api.get_entire_study(STUDY)
    assert entire.donors[0].submitterDonorId == "SDK-D1"
    assert (entire.studyId, entire.name, entire.study) == (STUDY, "SDK study", None)
    donor_id = entire.donors[0].donorId  # a regex: its first characters, any case
    by_donor = api.id_search(donor_id=donor_id[:8].upper() + ".*")
    assert [a.analysisId for a in by_donor] == [analysis.analysisId]

    update = FileUpdateRequest()
    update.info = {"checked": "yes"}
    api.update_file(bam.objectId, update)
    assert httpx.get(f"{server.url}/studies/{STUDY}/files/{bam.objectId}").json()["info"] == {
        "checked": "yes"
    }
    assert api.get_analysis(analysis.analysisId).analysisState == "PUBLISHED"

    unpublished = api.unpublish(analysis.analysisId)
    assert unpublished.message == f"AnalysisId {analysis.analysisId} successfully unpublished"
    assert api.get_analysis(analysis.analysisId).analysisState == "UNPUBLISHED"
    api.publish(analysis.analysisId)
    got = api.get_analysis(analysis.analysisId)
    assert got.analysisState == "PUBLISHED"
    assert "Z" not in got.publishedAt and got.publishedAt >= got.createdAt  # LocalDateTime

    with pytest.raises(SongError) as missing:
        api.get_analysis("00000000-0000-0000-0000-000000000000")
    assert missing.value.errorId == "analysis.id.not.found"
    anonymous = Api(ApiConfig(server.url, STUDY, None))
    with pytest.raises(SongError) as unauthorized:
        anonymous.publish(analysis.analysisId)
    assert unauthorized.value.errorId == "unauthorized.token"
    assert unauthorized.value.httpStatusCode == 401
