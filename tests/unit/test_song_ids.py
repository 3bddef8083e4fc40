"""Submissions as SONG makes them: ids minted as its LocalIdService mints them, donors,
specimens and samples found by (study, submitter id), unknown fields kept as info."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from pyscore.server import metadata
from pyscore.server.metadata.ids import song_id
from pyscore.server.tables import Donor, File, Sample, Specimen
from tests.publish import add_donors, song_payload
from tests.unit.memdb import memory_session

# LocalIdServiceTest (SONG song-server/src/test/java/bio/overture/song/server/service/id/):
# twoParamTest's three ids, the same for donor, specimen, sample and file ids
ID_A = "8540ebac-66f2-553a-b865-0d3006edd892"
ID_B = "57f844eb-4ab4-5d3d-8dc1-8b7a463e20c1"
ID_C = "b4f5aea1-1f4c-5e12-8557-76dbadb26239"


def test_local_id_service_test_ids_are_reproduced():
    assert song_id("parameter1_1", "parameter2_1") == ID_A
    assert song_id("parameter1_1", "parameter2_1") == ID_A
    assert song_id("parameter1_1", "parameter2_2") == ID_B
    assert song_id("parameter1_2", "parameter2_1") == ID_C


FILES = {"x.bam": b"x" * 10, "x.bam.bai": b"i" * 3}


def test_new_entities_and_objects_get_songs_ids():
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, "ST", {})
        analysis_id = metadata.submit(s, "ST", song_payload("ST", FILES, donor="D9"))
        donor = s.scalar(select(Donor))
        assert donor is not None and donor.donor_id == song_id("ST", "D9")
        assert s.scalar(select(Specimen.specimen_id)) == song_id("ST", "D9-SP")
        assert s.scalar(select(Sample.sample_id)) == song_id("ST", "D9-S")
        ids = {f.file_name: f.object_id for f in s.scalars(select(File))}
        assert ids == {name: song_id(analysis_id, name) for name in FILES}
        assert all(uuid.UUID(i).version == 5 for i in ids.values())


def test_an_existing_submitter_donor_specimen_and_sample_are_found_not_inserted():
    """Entities imported from SONG (or made by an older pyscore) keep their ids whatever
    they are: a resubmission naming their submitter ids links to them."""
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        add_donors(s, ["ST"], [("ST", "old-donor-id", "old-specimen-id", "old-sample-id")])
        payload = song_payload("ST", FILES, donor="x")
        sample = payload["samples"][0]
        sample["submitterSampleId"] = "old-sample-id"
        sample["specimen"]["submitterSpecimenId"] = "old-specimen-id"
        sample["donor"]["submitterDonorId"] = "old-donor-id"
        analysis_id = metadata.submit(s, "ST", payload)
        got = metadata.analysis_samples(s, analysis_id)
        assert [x["sampleId"] for x in got] == ["old-sample-id"]
        assert got[0]["donor"]["donorId"] == "old-donor-id"
        assert got[0]["specimen"]["specimenId"] == "old-specimen-id"
        assert s.scalar(select(Donor.donor_id).where(Donor.study_id == "ST")) == "old-donor-id"


def test_fields_song_does_not_know_are_kept_as_info():
    """As SONG's export test expects (documents/export/variantcall-output*.json)."""
    with memory_session() as s:
        metadata.seed_analysis_types(s)
        metadata.create_study(s, "ST", {})
        payload = song_payload("ST", FILES)
        sample = payload["samples"][0]
        sample["size"] = 5
        sample["specimen"]["ratio"] = "1:6"
        sample["donor"]["age"] = 34
        payload["files"][0]["colour"] = "red"
        payload["files"][1]["info"] = {"qc": "ok"}
        analysis_id = metadata.submit(s, "ST", payload)
        row = metadata.get_analysis_row(s, "ST", analysis_id)
        body = metadata.analysis_json(s, row)
        got = body["samples"][0]
        assert got["info"] == {"size": 5} and "size" not in got
        assert got["matchedNormalSubmitterSampleId"] is None
        assert got["specimen"]["info"] == {"ratio": "1:6"}
        assert got["donor"]["info"] == {"age": 34}
        files = {f["fileName"]: f["info"] for f in body["files"]}
        assert files == {"x.bam": {"colour": "red"}, "x.bam.bai": {"qc": "ok"}}
