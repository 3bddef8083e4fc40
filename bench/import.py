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
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BIN, add_record_flag, free_port, report, rss_of  # noqa: E402
from tests.loopback import Loopback  # noqa: E402
from tests.overture_double import (  # noqa: E402
    QC_V1,
    QC_V2,
    SCHEMA_SQL,
    donor_row,
    file_row,
    local_id,
    local_time,
    sample_row,
    specimen_row,
)

STUDIES = 4
BENCH_NS = uuid.UUID("0b9b0c5e-2f0e-4a7c-9a51-6c3f3a1b2d40")
T0 = datetime(2022, 1, 3, 8, 0, 0, 250000)


def study_of(i: int) -> str:
    return f"BENCH{(i // 8) % STUDIES}"


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


def content(i: int, name: str) -> bytes:
    """A file's bytes when they are written to a bucket (--adopt): small, and the MD5 SONG
    records is theirs."""
    return f"{i}:{name}".encode()


def files(i: int, small: bool = False) -> list[dict]:
    """The analysis's files; `small`: of the sizes of their `content` (a bucket holds them)."""
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
            "fileSize": len(content(i, name)) if small else size,
            "fileType": kind,
            "fileMd5sum": hashlib.md5(content(i, name)).hexdigest(),
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


# -- the platform's entities, by index (donor d: specimens 2d, 2d+1; specimen k: samples 2k, 2k+1)
def donor_json(d: int) -> dict:
    study = f"BENCH{d % STUDIES}"
    return {
        "donorId": local_id(study, f"DO{d}"),
        "studyId": study,
        "submitterDonorId": f"DO{d}",
        "gender": ("Male", "Female", "Other")[d % 3],
        "info": {"age": 20 + d % 60},
    }


def specimen_json(k: int) -> dict:
    study = f"BENCH{(k // 2) % STUDIES}"
    return {
        "specimenId": local_id(study, f"SP{k}"),
        "donorId": local_id(study, f"DO{k // 2}"),
        "submitterSpecimenId": f"SP{k}",
        "tumourNormalDesignation": "Normal" if k % 2 else "Tumour",
        "specimenTissueSource": "Solid tissue",
        "specimenType": "Normal" if k % 2 else "Primary tumour",
    }


def sample_json(j: int) -> dict:
    study = f"BENCH{(j // 4) % STUDIES}"
    return {
        "sampleId": local_id(study, f"SA{j}"),
        "specimenId": local_id(study, f"SP{j // 2}"),
        "submitterSampleId": f"SA{j}",
        "matchedNormalSubmitterSampleId": None,
        "sampleType": "Total DNA",
    }


# -- SONG's database ------------------------------------------------------------------------
def copy(conn: Any, table: str, rows: Iterator[dict]) -> None:
    """Rows (dicts of one shape) into one of SONG's tables with COPY."""
    first = next(rows, None)
    if first is None:
        return
    with conn.cursor().copy(f"COPY {table} ({', '.join(first)}) FROM STDIN") as cp:
        for row in itertools.chain([first], rows):
            cp.write_row(list(row.values()))


def info_rows(kind: str, key: str, bodies: Iterator[dict]) -> Iterator[dict]:
    for body in bodies:
        yield {"id": body[key], "id_type": kind, "info": json.dumps(body.get("info") or {})}


def fill_database(url: str, n: int, small: bool = False) -> None:
    """SONG's tables for n analyses, with COPY (`small`: see `files`)."""
    import psycopg

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
        studies = [{"id": f"BENCH{s}", "name": f"Bench study {s}"} for s in range(STUDIES)]
        copy(conn, "study", iter(studies))
        copy(conn, "donor", map(donor_row, map(donor_json, range(donors))))
        copy(conn, "specimen", map(specimen_row, map(specimen_json, range(specimens))))
        copy(conn, "sample", map(sample_row, map(sample_json, range(samples))))
        every_file = (f for i in range(n) for f in files(i, small))
        for rows in (
            info_rows("Study", "id", iter(studies)),
            info_rows("Donor", "donorId", map(donor_json, range(donors))),
            info_rows("Specimen", "specimenId", map(specimen_json, range(specimens))),
            info_rows("Sample", "sampleId", map(sample_json, range(samples))),
            info_rows("File", "objectId", every_file),
        ):
            copy(conn, "info", rows)
        copy(conn, "analysis_data", ({"id": i + 1, "data": json.dumps(data(i))} for i in range(n)))

        def analyses() -> Iterator[dict]:
            for i in range(n):
                state, changes = history(i)
                created = T0 + timedelta(seconds=i)
                yield {
                    "id": analysis_id(i),
                    "study_id": study_of(i),
                    "state": state,
                    "analysis_schema_id": schema_ids[kind(i)],
                    "analysis_data_id": i + 1,
                    "created_at": created,
                    "updated_at": changes[-1][2] if changes else created,
                }

        copy(conn, "analysis", analyses())
        copy(
            conn,
            "sampleset",
            (
                {"analysis_id": analysis_id(i), "sample_id": sample_json(i // 2)["sampleId"]}
                for i in range(n)
            ),
        )
        copy(conn, "file", (file_row(f) for i in range(n) for f in files(i, small)))
        copy(
            conn,
            "analysis_state_change",
            (
                {
                    "analysis_id": analysis_id(i),
                    "initial_state": a,
                    "updated_state": b,
                    "updated_at": at,
                }
                for i in range(n)
                for a, b, at in history(i)[1]
            ),
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
                {
                    **sample_json(i // 2),
                    "specimen": specimen_json(i // 4),
                    "donor": donor_json(i // 8),
                }
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
                d, sp = donor_json(i // 8), specimen_json(i // 4)
                donor = donors.setdefault(d["donorId"], {**d, "specimens": {}})
                spec = donor["specimens"].setdefault(sp["specimenId"], {**sp, "samples": []})
                spec["samples"].append(sample_json(i // 2))
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


# -- Score's bucket ---------------------------------------------------------------------------
BUCKET = "score-bench"


def write_bucket(s3: Any, n: int) -> tuple[int, int]:
    """The objects of n analyses as Score left them in one bucket: `data/<id>` and, for all
    but every tenth (uploaded around Score: its MD5 in `md5chksum`), `data/<id>.meta`; put
    32 at a time. (objects, .meta files) written."""
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from tests.overture_double import score_meta

    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="data/heliograph", Body=b"heliograph")

    def put(i: int) -> int:
        metas = 0
        for k, f in enumerate(files(i, small=True)):
            data = content(i, f["fileName"])
            key = f"data/{f['objectId']}"
            if (3 * i + k) % 10 == 0:
                md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
                s3.put_object(Bucket=BUCKET, Key=key, Body=data, Metadata={"md5chksum": md5})
                continue
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            meta = score_meta(f["objectId"], data, str(uuid.uuid5(BENCH_NS, key)))
            s3.put_object(Bucket=BUCKET, Key=key + ".meta", Body=json.dumps(meta))
            metas += 1
        return metas

    with ThreadPoolExecutor(32) as pool:
        metas = sum(pool.map(put, range(n), chunksize=64))
    return 3 * n, metas


def adopt(admin: str, work: Path, objects: int) -> str:
    """`score-server import score` of `objects` objects (after `import song` of their
    analyses) through a counting proxy in front of Ceph RGW: its time, its peak RSS, and
    every request it made; no GET may read an object's bytes (HEAD and `.meta` only)."""
    import boto3
    from botocore.config import Config

    from bench.scale import S3, exported
    from tests.faultproxy import FaultProxy

    n = -(-objects // 3)
    song = new_database(admin, "song")
    fill_database(song, n, small=True)
    data_dir = new_platform(work / "pyscore-adopt", admin)
    timed_import(data_dir, "--song-database", song)
    out = subprocess.run(
        ["bash", str(S3), "start", str(work / "ceph"), str(free_port())],
        capture_output=True,
        text=True,
        env={**os.environ, "S3_SERVER": "ceph"},
    )
    if out.returncode != 0:
        raise SystemExit(f"Ceph RGW did not start:\n{out.stderr}")
    try:
        env = exported(out.stdout)
        s3 = boto3.client(
            "s3",
            endpoint_url=env["S3_ENDPOINT"],
            aws_access_key_id=env["S3_ACCESS_KEY"],
            aws_secret_access_key=env["S3_SECRET_KEY"],
            region_name="us-east-1",
            config=Config(
                signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=32
            ),
        )
        t = time.monotonic()
        written, metas = write_bucket(s3, n)
        print(f"{written:,} objects ({metas:,} .meta) written in {time.monotonic() - t:.0f} s")
        proxy = FaultProxy(int(env["S3_ENDPOINT"].rsplit(":", 1)[1]), data_path="/")
        try:
            start = time.monotonic()
            proc = subprocess.Popen(
                [
                    str(BIN / "score-server"),
                    "import",
                    "score",
                    "--data-dir",
                    str(data_dir),
                    "--bucket",
                    f"s3://{BUCKET}",
                    "--s3-endpoint",
                    proxy.url,
                    "--s3-access-key",
                    env["S3_ACCESS_KEY"],
                    "--s3-secret-key",
                    env["S3_SECRET_KEY"],
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            summary, peak, err = output_and_peak(proc)
            took = time.monotonic() - start
        finally:
            proxy.close()
        if proc.returncode:
            raise SystemExit(f"import score failed: {err}")
        calls = Counter(
            "GET .meta"
            if m == "GET" and p.split("?")[0].endswith(".meta")
            else "GET listing"
            if m == "GET" and "list-type" in p
            else "GET object bytes"
            if m == "GET"
            else m
            for m, p in proxy.stats.requests
        )
        if calls["GET object bytes"]:
            raise SystemExit(f"object bytes were read: {calls}")
        print(summary.getvalue().decode())
        return (
            f"| {written:,} | {metas:,} | {took:.0f} s | {written / took:,.0f} | "
            f"{calls['HEAD']:,} | {calls['GET .meta']:,} | {calls['GET listing']:,} | "
            f"{calls['GET object bytes']} | {peak / 1024:.0f} MiB |"
        )
    finally:
        subprocess.run(["bash", str(S3), "stop", str(work / "ceph")], capture_output=True)


# -- running ----------------------------------------------------------------------------------
def new_database(admin: str, prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + f"/{name}"


def output_and_peak(proc: subprocess.Popen) -> tuple[io.BytesIO, int, str]:
    """A running command's standard output (read beside it, so its pipe never fills) and its
    peak RSS, once it has ended."""
    import threading

    out = io.BytesIO()
    reader = threading.Thread(target=lambda: out.write(proc.stdout.read()), daemon=True)
    reader.start()
    peak, err = rss_of(proc)
    reader.join()
    return out, peak, err


def new_platform(data_dir: Path, admin: str) -> Path:
    """An empty pyscore platform in `data_dir` on a new database of the bench's PostgreSQL."""
    init = [str(BIN / "score-server"), "init", "--data-dir", str(data_dir)]
    database = ["--database-url", new_database(admin, "pyscore")]
    subprocess.run([*init, *database], check=True, capture_output=True)
    return data_dir


def timed_import(data_dir: Path, *source: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, the summary) of one `score-server import song`."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "score-server"), "import", "song", "--data-dir", str(data_dir), *source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, peak, _ = output_and_peak(proc)
    took = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"import failed: {proc.stderr.read().decode(errors='replace')}")
    return took, peak, out.getvalue().decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="analyses per run ('' for none)")
    ap.add_argument(
        "--adopt", type=int, default=0, help="also adopt this many objects from a Score bucket"
    )
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
        adopted = adopt(admin, work, args.adopt) if args.adopt else None
        for n in [int(x) for x in args.sizes.split(",") if x]:
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
                data_dir = new_platform(work / f"pyscore-{n}-{len(rows)}", admin)
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
    if adopted:
        report(
            "\n".join(
                [
                    f"### import score: Score's objects adopted in place, Ceph RGW ({stamp})",
                    "`score-server import score` after `import song` of their analyses, "
                    "through a counting proxy in front of RGW (its time included): one "
                    "bucket, a `.meta` for 9 objects in 10, the rest told by a HEAD "
                    "(`md5chksum`). Load average "
                    f"{os.getloadavg()[0]:.1f} (2 cores, shared).",
                    "",
                    "| objects | .meta | time | objects/s | HEADs | .meta GETs | listing GETs "
                    "| object-byte GETs | peak RSS |",
                    "|---|---|---|---|---|---|---|---|---|",
                    adopted,
                    "",
                ]
            ),
            args,
        )
    if not rows:
        return
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
