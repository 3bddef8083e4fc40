"""Put files into a platform and publish them, in-process (the server may be running)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from pyscore.server import metadata, objects
from pyscore.server.app import Platform
from pyscore.server.settings import Settings
from pyscore.server.tables import Study

MiB = 1024 * 1024


def random_file(path: Path, size: int, seed: int = 1) -> Path:
    """Reproducible, incompressible bytes: a random MiB, each copy stamped with its offset."""
    block = random.Random(seed).randbytes(MiB)
    with open(path, "wb") as f:
        for offset in range(0, size, MiB):
            f.write((offset.to_bytes(8, "little") + block[8:])[: min(MiB, size - offset)])
    return path


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def publish(data_dir: Path, files: list[Path], study: str = "BIG", access: str = "controlled",
            file_type: str = "BAM") -> list[str]:
    """Submit one analysis with these files, store them, publish; return their object ids."""
    platform = Platform.open(Settings.load(data_dir))
    with platform.db.session() as s:
        if s.get(Study, study) is None:
            metadata.create_study(s, study, {"name": study})
        payload = {
            "studyId": study, "analysisType": {"name": "sequencingRead"},
            "experiment": {"libraryStrategy": "WGS"},
            "samples": [{"submitterSampleId": f"{study}-S1", "sampleType": "Total DNA",
                         "matchedNormalSubmitterSampleId": None,
                         "specimen": {"submitterSpecimenId": f"{study}-SP1",
                                      "specimenTissueSource": "Blood derived",
                                      "tumourNormalDesignation": "Normal",
                                      "specimenType": "Normal"},
                         "donor": {"submitterDonorId": f"{study}-D1", "gender": "Other"}}],
            "files": [{"fileName": f.name, "fileSize": f.stat().st_size,
                       "fileMd5sum": file_md5(f),
                       "fileType": file_type, "fileAccess": access, "dataType": "test"}
                      for f in files],
        }
        analysis_id = metadata.submit(s, study, payload, allow_duplicates=True)
        rows = {r.file_name: r for r in metadata.analysis_files(s, analysis_id)}
        for f in files:
            objects.ingest(s, platform.store, rows[f.name].object_id, f,
                           platform.settings.part_size)
        s.flush()
        metadata.change_state(s, study, analysis_id, "publish")
        return [rows[f.name].object_id for f in files]
