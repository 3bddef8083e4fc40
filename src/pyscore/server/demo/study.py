"""Load the generated demo data into a platform: register, submit, store, publish, and write
the File Repository manifest. Idempotent: re-running reuses what is already there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pyscore.server import metadata, objects, repository
from pyscore.server.demo.data import DemoAnalysis, generate
from pyscore.server.errors import ApiError
from pyscore.server.tables import AnalysisType, File, Study
from pyscore.wire.manifest import format_argo

CLINICAL_TYPE = {
    "type": "object",
    "properties": {
        "experiment": {"type": "object"},  # every analysis type has one (Song's meta-schema)
        "clinical": {"type": "object", "properties": {"dictionaryVersion": {"type": "string"}}},
    },
    "required": ["experiment", "clinical"],
    "file_types": ["TSV", "TXT"],
}
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "sequencingRead": {
        "experiment": {
            "libraryStrategy": "WGS",
            "aligned": True,
            "alignmentTool": "pyscore-demo",
            "pairedEnd": True,
            "insertSize": 350,
            "referenceGenome": "pyscore-demo-ref",
        }
    },
    "clinicalData": {"experiment": {}, "clinical": {"dictionaryVersion": "1.0"}},
}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _sample(donor: str) -> dict:
    return {
        "submitterSampleId": f"{donor}-N",
        "sampleType": "Total DNA",
        "matchedNormalSubmitterSampleId": None,
        "specimen": {
            "submitterSpecimenId": f"{donor}-SP-N",
            "specimenTissueSource": "Blood derived",
            "tumourNormalDesignation": "Normal",
            "specimenType": "Normal",
        },
        "donor": {"submitterDonorId": donor, "gender": "Female" if donor.endswith("1") else "Male"},
    }


def payload(study_id: str, analysis: DemoAnalysis, donors: list[str]) -> dict:
    extra: dict[str, Any] = EXPERIMENTS.get(analysis.analysis_type) or {
        "experiment": {
            "variantCallingTool": "pyscore-demo-caller",
            "matchedNormalSampleSubmitterId": f"{analysis.donor}-N",
        }
    }
    return {
        "studyId": study_id,
        "analysisType": {"name": analysis.analysis_type},
        "samples": [_sample(d) for d in ([analysis.donor] if analysis.donor else donors)],
        "files": [
            {
                "fileName": f.path.name,
                "fileSize": f.path.stat().st_size,
                "fileMd5sum": _md5(f.path),
                "fileType": f.file_type,
                "fileAccess": f.access,
                "dataType": f.data_type,
            }
            for f in analysis.files
        ],
        **extra,
    }


MANIFEST_SUFFIX = "-manifest.tsv"  # <study>-manifest.tsv beside the study's files


def studies_in(out: Path) -> list[str]:
    """The studies whose demo files are in `out` (each wrote its manifest there)."""
    return sorted(p.name[: -len(MANIFEST_SUFFIX)] for p in out.glob(f"*{MANIFEST_SUFFIX}"))


def load_demo(platform, out: Path, study_id: str = "DEMO", reads_per_contig: int = 3000) -> Path:
    """Generate, submit, store and publish the demo study; return the manifest's path."""
    plan = generate(out, reads_per_contig=reads_per_contig)
    donors = sorted({a.donor for a in plan if a.donor})
    part_size = platform.settings.part_size
    with platform.db.session() as s:
        if s.get(Study, study_id) is None:
            metadata.create_study(
                s,
                study_id,
                {
                    "name": "pyscore demo study",
                    "organization": "pyscore",
                    "description": "Synthetic data: two donors, BAM/CRAM/VCF, clinical TSV",
                },
            )
        if s.get(AnalysisType, ("clinicalData", 1)) is None:
            metadata.register_analysis_type(s, "clinicalData", CLINICAL_TYPE)
    for analysis in plan:
        body = payload(study_id, analysis, donors)
        with platform.db.session() as s:
            try:
                analysis_id = metadata.submit(s, study_id, body)
            except ApiError as exc:
                if exc.error_id != "duplicate.analysis.attempt":
                    raise
                found = metadata.find_duplicate(s, study_id, body["files"])
                if found is None:
                    raise
                analysis_id = found
            for f, entry in zip(
                metadata.analysis_files(s, analysis_id),
                sorted(analysis.files, key=lambda d: d.path.name),
            ):
                if not objects.object_exists(s, f.object_id):
                    objects.ingest(s, platform.store, f.object_id, entry.path, part_size)
            s.flush()
            metadata.change_state(s, study_id, analysis_id, "publish")
    manifest = out / f"{study_id}{MANIFEST_SUFFIX}"
    with platform.db.session() as s:
        rows = repository.manifest_rows(
            s,
            repository.Filters({"study": [study_id]}),
            platform.settings.extra.get("repository_code", "PYSCORE"),
        )
    manifest.write_text(format_argo(rows))
    return manifest


def reference_of(platform, study_id: str) -> str | None:
    """The object id of the demo study's reference genome (reference.fa), for the viewer."""
    with platform.db.session() as s:
        named = (File.study_id == study_id) & (File.file_name == "reference.fa")
        return s.scalar(select(File.object_id).where(named))
