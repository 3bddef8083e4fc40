"""SONG's own test documents (song-server/src/test/resources/documents/, read from a SONG
checkout: tests/song_sources.py) submitted to pyscore give the analyses SONG's tests expect."""

from __future__ import annotations

import pytest

from pyscore.server import metadata
from pyscore.server.errors import ApiError
from pyscore.server.metadata.ids import song_id
from tests.song_sources import DOCUMENTS, song_json
from tests.unit.memdb import memory_session

STUDY = "ABC123"  # the study SONG's documents name


def exported(analysis: dict) -> dict:
    """An analysis as SONG's ExportService writes it (a test double of its PayloadConverter
    and NON_EMPTY): the submission's shape, without ids, state or times, empty info left out."""

    def entity(d: dict, *drop: str) -> dict:
        return {k: v for k, v in d.items() if k not in drop and not (k == "info" and not v)}

    samples = []
    for s in analysis["samples"]:
        sample = entity(s, "sampleId", "specimenId", "specimen", "donor")
        sample["specimen"] = entity(s["specimen"], "specimenId", "donorId")
        sample["donor"] = entity(s["donor"], "donorId", "studyId")
        samples.append(sample)
    top = {
        k: v
        for k, v in analysis.items()
        if k
        not in {
            "analysisId",
            "analysisState",
            "createdAt",
            "updatedAt",
            "firstPublishedAt",
            "publishedAt",
            "analysisStateHistory",
        }
    }
    files = [entity(f, "analysisId", "objectId", "studyId") for f in analysis["files"]]
    return {**top, "samples": samples, "files": files}


def by_name(payload: dict) -> dict:
    return {**payload, "files": sorted(payload["files"], key=lambda f: f["fileName"])}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_export_service_test_payloads(n: int):
    """ExportServiceTest: submit variantcall-input<n>, export, expect variantcall-output<n>."""
    given = song_json(f"{DOCUMENTS}/export/variantcall-input{n}.json")
    expected = song_json(f"{DOCUMENTS}/export/variantcall-output{n}.json")
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, STUDY, {})
        analysis_id = metadata.submit(s, STUDY, {**given, "studyId": STUDY})
        got = metadata.analysis_json(s, metadata.get_analysis_row(s, STUDY, analysis_id))
    assert by_name(exported(got)) == by_name({**expected, "studyId": STUDY})


@pytest.mark.parametrize(
    "name",
    ["sequencingread-valid.json", "validation/sequencingRead.json", "validation/variantCall.json"],
)
def test_valid_documents_get_local_id_service_ids(name: str):
    given = song_json(f"{DOCUMENTS}/{name}")
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, STUDY, {})
        analysis_id = metadata.submit(s, STUDY, given)
        got = metadata.analysis_json(s, metadata.get_analysis_row(s, STUDY, analysis_id))
    for sample, submitted in zip(got["samples"], given["samples"]):
        assert sample["sampleId"] == song_id(STUDY, submitted["submitterSampleId"])
        spec = submitted["specimen"]["submitterSpecimenId"]
        assert sample["specimen"]["specimenId"] == song_id(STUDY, spec)
        donor = submitted["donor"]["submitterDonorId"]
        assert sample["donor"]["donorId"] == song_id(STUDY, donor)
    assert {f["objectId"] for f in got["files"]} == {
        song_id(analysis_id, f["fileName"]) for f in given["files"]
    }


@pytest.mark.parametrize(
    "name", ["sequencingread-invalid-enum.json", "sequencingread-missing-required.json"]
)
def test_invalid_documents_are_refused_as_song_refuses_them(name: str):
    """SchemaValidationTests: these two documents do not validate."""
    given = song_json(f"{DOCUMENTS}/{name}")
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, STUDY, {})
        with pytest.raises(ApiError) as err:
            metadata.submit(s, STUDY, given)
    assert err.value.error_id == "schema.violation"
