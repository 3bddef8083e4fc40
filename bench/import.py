"""`score-server import song` at scale: a SONG platform of N analyses (3 files each) moved into a
pyscore on PostgreSQL, from SONG's PostgreSQL and from a loopback SONG API double; each import
run twice (the second changes nothing); time and the importer's peak RSS at each size.

    .venv/bin/python bench/import.py [--sizes 10000,100000] [--no-http] [--no-record]

Targets (issue 21): 100,000 analyses / 300,000 files from SONG's database in < 5 min and from
its API in < 30 min; a second run in < 1/10 of the first; memory flat as the platform grows.

The platform is a function of each analysis's index (tests/overture_double.py's shapes and
SONG's tables, tests/song_schema.sql), so neither the database fill nor the API double keeps it
in memory: 4 studies; per donor 2 specimens, per specimen 2 samples, per sample 2 analyses;
analyses of two versions of a type, 85% published, 10% unpublished (half of them published
once), 5% suppressed; a BAM, its BAI and a text file each.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, add_record_flag, report, rss_of  # noqa: E402
from tests.loopback import Loopback  # noqa: E402
from tests.overture_double import QC_V1, QC_V2, SCHEMA_SQL, local_id, local_time  # noqa: E402

STUDIES = 4
BENCH_NS = uuid.UUID("0b9b0c5e-2f0e-4a7c-9a51-6c3f3a1b2d40")
T0 = datetime(2022, 1, 3, 8, 0, 0, 250000)


def study_of(i: int) -> str:
    return f"BENCH{(i // 8) % STUDIES}"


def entities(i: int) -> tuple[str, str, str, str]:
    """(study, submitter donor, specimen, sample) of analysis i."""
    j = i // 2
    return study_of(i), f"DO{j // 4}", f"SP{j // 2}", f"SA{j}"


def history(i: int) -> tuple[str, list[tuple[str, str, datetime]]]:
    at = T0 + timedelta(seconds=i, minutes=30)
    kind = i % 20
    if kind == 0:
        return "SUPPRESSED", [
            ("UNPUBLISHED", "PUBLISHED", at),
            ("PUBLISHED", "SUPPRESSED", at + timedelta(days=3)),
        ]
    if kind == 1:
        return "UNPUBLISHED", [
            ("UNPUBLISHED", "PUBLISHED", at),
            ("PUBLISHED", "UNPUBLISHED", at + timedelta(days=1)),
        ]
    if kind == 2:
        return "UNPUBLISHED", []
    return "PUBLISHED", [("UNPUBLISHED", "PUBLISHED", at)]


def analysis_id(i: int) -> str:
    return str(uuid.uuid5(BENCH_NS, str(i)))


def files(i: int) -> list[dict]:
    study, aid = study_of(i), analysis_id(i)
    out = []
    for name, size, kind in (
        (f"A{i}.bam", 10**9 + i, "BAM"),
        (f"A{i}.bam.bai", 10**6 + i, "BAI"),
        (f"A{i}.qc.txt", 1000 + i % 97, "TXT"),
    ):
        body = {
            "objectId": local_id(aid, name),
            "studyId": study,
            "analysisId": aid,
            "fileName": name,
            "fileSize": size,
            "fileType": kind,
            "fileMd5sum": hashlib.md5(f"{i}:{name}".encode()).hexdigest(),
            "fileAccess": "controlled" if i % 3 else "open",
            "dataType": "Aligned Reads" if kind != "TXT" else "QC",
        }
        if kind == "TXT":
            body["info"] = {"pipeline": f"qc-{i % 5}"}
        out.append(body)
    return out


def data(i: int) -> dict:
    return {"experiment": {"tool": f"t{i % 7}"}, "workflow": {"name": "align", "run": i}}


def kind(i: int) -> tuple[str, int]:
    return ("qcMetrics", 1 + i % 2)


# -- SONG's database ------------------------------------------------------------------------
def fill_database(url: str, n: int) -> None:
    """SONG's tables for n analyses, with COPY."""
    import psycopg

    def copy(conn: Any, table: str, columns: str, rows: Any) -> None:
        with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)

    samples = (n + 1) // 2
    specimens, donors = (samples + 1) // 2, (samples + 3) // 4
    with psycopg.connect(url) as conn:
        conn.execute(SCHEMA_SQL.read_text())
        schema_ids = {}
        for name, version, schema in (("qcMetrics", 1, QC_V1), ("qcMetrics", 2, QC_V2)):
            (schema_ids[(name, version)],) = conn.execute(
                "INSERT INTO analysis_schema (name, version, schema, created_at) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (name, version, json.dumps(schema), T0),
            ).fetchone()
        copy(
            conn,
            "study",
            "id, name",
            ((f"BENCH{s}", f"Bench study {s}") for s in range(STUDIES)),
        )

        def donor(d: int) -> tuple:
            study = f"BENCH{d % STUDIES}"
            return local_id(study, f"DO{d}"), study, f"DO{d}", ("Male", "Female", "Other")[d % 3]

        copy(conn, "donor", "id, study_id, submitter_id, gender", map(donor, range(donors)))

        def specimen(k: int) -> tuple:
            study = f"BENCH{(k // 2) % STUDIES}"
            return (
                local_id(study, f"SP{k}"),
                local_id(study, f"DO{k // 2}"),
                f"SP{k}",
                "Normal" if k % 2 else "Tumour",
                "Solid tissue",
                "Normal" if k % 2 else "Primary tumour",
            )

        copy(
            conn,
            "specimen",
            "id, donor_id, submitter_id, tumour_normal_designation, tissue_source, type",
            map(specimen, range(specimens)),
        )

        def sample(j: int) -> tuple:
            study = f"BENCH{(j // 4) % STUDIES}"
            return local_id(study, f"SA{j}"), local_id(study, f"SP{j // 2}"), f"SA{j}", "Total DNA"

        copy(conn, "sample", "id, specimen_id, submitter_id, type", map(sample, range(samples)))

        def infos():
            for s in range(STUDIES):
                yield f"BENCH{s}", "Study", "{}"
            for d in range(donors):
                yield donor(d)[0], "Donor", json.dumps({"age": 20 + d % 60})
            for k in range(specimens):
                yield specimen(k)[0], "Specimen", "{}"
            for j in range(samples):
                yield sample(j)[0], "Sample", "{}"
            for i in range(n):
                for f in files(i):
                    yield f["objectId"], "File", json.dumps(f.get("info") or {})

        copy(conn, "info", "id, id_type, info", infos())
        copy(
            conn,
            "analysis_data",
            "id, data",
            ((i + 1, json.dumps(data(i))) for i in range(n)),
        )

        def analyses():
            for i in range(n):
                state, changes = history(i)
                created = T0 + timedelta(seconds=i)
                updated = changes[-1][2] if changes else created
                yield (
                    analysis_id(i),
                    study_of(i),
                    state,
                    schema_ids[kind(i)],
                    i + 1,
                    created,
                    updated,
                )

        copy(
            conn,
            "analysis",
            "id, study_id, state, analysis_schema_id, analysis_data_id, created_at, updated_at",
            analyses(),
        )
        copy(
            conn,
            "sampleset",
            "analysis_id, sample_id",
            ((analysis_id(i), local_id(study_of(i), entities(i)[3])) for i in range(n)),
        )
        copy(
            conn,
            "file",
            "id, analysis_id, study_id, name, size, md5, type, access, data_type",
            (
                (
                    f["objectId"],
                    f["analysisId"],
                    f["studyId"],
                    f["fileName"],
                    f["fileSize"],
                    f["fileMd5sum"],
                    f["fileType"],
                    f["fileAccess"],
                    f["dataType"],
                )
                for i in range(n)
                for f in files(i)
            ),
        )
        copy(
            conn,
            "analysis_state_change",
            "analysis_id, initial_state, updated_state, updated_at",
            ((analysis_id(i), a, b, at) for i in range(n) for a, b, at in history(i)[1]),
        )
        conn.execute("ANALYZE")


# -- SONG's API -------------------------------------------------------------------------------
class BenchApi:
    """SONG's open endpoints for the generated platform, each answer made when asked."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.loop = Loopback(self._handle)
        self.url = self.loop.url

    def close(self) -> None:
        self.loop.close()

    def _indices(self, s: int) -> list[int]:
        return [i for i in range(self.n) if (i // 8) % STUDIES == s]

    def _sample(self, i: int) -> dict:
        study, _, specimen, sample = entities(i)
        return {
            "sampleId": local_id(study, sample),
            "specimenId": local_id(study, specimen),
            "submitterSampleId": sample,
            "matchedNormalSubmitterSampleId": None,
            "sampleType": "Total DNA",
        }

    def _specimen(self, i: int) -> dict:
        study, donor, specimen, _ = entities(i)
        k = int(specimen[2:])
        return {
            "specimenId": local_id(study, specimen),
            "donorId": local_id(study, donor),
            "submitterSpecimenId": specimen,
            "tumourNormalDesignation": "Normal" if k % 2 else "Tumour",
            "specimenTissueSource": "Solid tissue",
            "specimenType": "Normal" if k % 2 else "Primary tumour",
        }

    def _donor(self, i: int) -> dict:
        study, donor, _, _ = entities(i)
        d = int(donor[2:])
        return {
            "donorId": local_id(study, donor),
            "studyId": study,
            "submitterDonorId": donor,
            "gender": ("Male", "Female", "Other")[d % 3],
            "info": {"age": 20 + d % 60},
        }

    def _analysis(self, i: int) -> dict:
        state, changes = history(i)
        created = T0 + timedelta(seconds=i)
        published = [at for _, b, at in changes if b == "PUBLISHED"]
        name, version = kind(i)
        return {
            **data(i),
            "analysisId": analysis_id(i),
            "studyId": study_of(i),
            "analysisState": state,
            "analysisType": {"name": name, "version": version},
            "createdAt": local_time(created),
            "updatedAt": local_time(changes[-1][2] if changes else created),
            "firstPublishedAt": local_time(min(published)) if published else None,
            "publishedAt": local_time(max(published)) if published else None,
            "analysisStateHistory": [
                {"initialState": a, "updatedState": b, "updatedAt": local_time(at)}
                for a, b, at in changes
            ],
            "samples": [
                {**self._sample(i), "specimen": self._specimen(i), "donor": self._donor(i)}
            ],
            "files": files(i),
        }

    def _answer(self, path: str, q: dict[str, str]) -> Any:
        parts = [unquote(x) for x in path.strip("/").split("/")]
        if parts == ["studies", "all"]:
            return [f"BENCH{s}" for s in range(STUDIES)]
        if parts == ["schemas"]:
            rows = [
                {
                    "name": "qcMetrics",
                    "version": v,
                    "createdAt": local_time(T0),
                    "schema": schema,
                    "options": {"fileTypes": [], "externalValidations": []},
                }
                for v, schema in ((1, QC_V1), (2, QC_V2))
            ]
            offset = int(q.get("offset", 0))
            return {"limit": 100, "offset": offset, "count": 2, "resultSet": rows[offset:]}
        s = int(parts[1][5:])
        if len(parts) == 2:
            return {"studyId": parts[1], "name": f"Bench study {s}"}
        ids = self._indices(s)
        if parts[2:] == ["all"]:
            donors: dict[str, dict] = {}
            for i in ids[::2]:  # one analysis per sample
                donor = donors.setdefault(
                    self._donor(i)["donorId"], {**self._donor(i), "specimens": {}}
                )
                spec = donor["specimens"].setdefault(
                    self._specimen(i)["specimenId"], {**self._specimen(i), "samples": []}
                )
                spec["samples"].append(self._sample(i))
            for donor in donors.values():
                donor["specimens"] = list(donor["specimens"].values())
            return {
                "studyId": parts[1],
                "name": f"Bench study {s}",
                "donors": list(donors.values()),
            }
        offset, limit = int(q.get("offset", 0)), int(q.get("limit", 100))
        page = [self._analysis(i) for i in ids[offset : offset + limit]]
        return {"analyses": page, "totalAnalyses": len(ids), "currentTotalAnalyses": len(page)}

    def _handle(self, h: Any) -> None:
        url = urlsplit(h.path)
        body = json.dumps(
            self._answer(url.path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        )
        raw = body.encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)


# -- running ----------------------------------------------------------------------------------
def new_database(admin: str, prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + f"/{name}"


def timed_import(data_dir: Path, *source: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, the summary) of one `score-server import song`."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "score-server"), "import", "song", "--data-dir", str(data_dir), *source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = io.BytesIO()
    import threading

    reader = threading.Thread(target=lambda: out.write(proc.stdout.read()), daemon=True)
    reader.start()
    peak = rss_of(proc)
    reader.join()
    took = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"import failed: {proc.stderr_text}")  # type: ignore[attr-defined]
    return took, peak, out.getvalue().decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--postgres", help="an admin URL (default: scripts/postgres.sh starts one)")
    add_record_flag(ap)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    os.chmod(work, 0o755)
    admin = args.postgres
    if not admin:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "start", str(work / "pg"), "55497"],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise SystemExit(f"postgres.sh start failed: {out.stderr}")
        admin = out.stdout.strip().split("=", 1)[1]
    rows = []
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            song = new_database(admin, "song")
            t = time.monotonic()
            fill_database(song, n)
            print(
                f"{n:,} analyses: SONG's database filled in {time.monotonic() - t:.0f} s",
                flush=True,
            )
            sources = [("SONG's PostgreSQL", ["--song-database", song])]
            api = None if args.no_http else BenchApi(n)
            if api:
                sources.append(("SONG's API (loopback double)", ["--song-url", api.url]))
            for label, source in sources:
                data_dir = work / f"pyscore-{n}-{len(rows)}"
                subprocess.run(
                    [
                        str(BIN / "score-server"),
                        "init",
                        "--data-dir",
                        str(data_dir),
                        "--database-url",
                        new_database(admin, "pyscore"),
                    ],
                    check=True,
                    capture_output=True,
                )
                first, rss1, summary = timed_import(data_dir, *source)
                second, rss2, _ = timed_import(data_dir, *source)
                print(f"  {label}: {first:.1f} s, then {second:.1f} s", flush=True)
                if "Not imported" in summary:
                    raise SystemExit(summary)
                rows.append((n, label, first, second, max(rss1, rss2)))
            if api:
                api.close()
    finally:
        if not args.postgres:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", str(work / "pg")]
            )
    stamp = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"### import song: SONG platforms into pyscore on PostgreSQL ({stamp})",
        "Analyses with 3 files each (4 studies; 85% published, 10% unpublished, 5% suppressed), "
        "imported twice (the second run changes nothing). Targets at 100,000: database < 300 s, "
        "API < 1,800 s, second run < 1/10 of the first, memory flat.",
        "",
        "| analyses | files | source | first run | second run | second / first | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, label, first, second, rss in rows:
        lines.append(
            f"| {n:,} | {3 * n:,} | {label} | {first:.0f} s | {second:.1f} s | "
            f"{second / first:.2f} | {rss / 1024:.0f} MiB |"
        )
    report("\n".join(lines) + "\n", args)


if __name__ == "__main__":
    main()
