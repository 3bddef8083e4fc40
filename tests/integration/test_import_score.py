"""`score-server import score`: a Score bucket on the suite's S3 server, written with Score's
keys and `.meta` JSON (tests/overture_double.py), single or partitioned with a state bucket
apart, adopted in place after `import song`; every published object then downloads by its old
object id, byte for byte, through score-client and the Java client's wire alike, and nothing
unpublished, suppressed or unlike SONG's record is served."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.conftest import SERVER, Server, init_server, one_line_error, run
from tests.integration.test_import_song import fingerprint
from tests.integration.test_java_client_wire import OBJ, call, check_entity, check_spec, json_of
from tests.overture_double import (
    SongApiDouble,
    SongPlatform,
    example_platform,
    partition,
    write_score_bucket,
)

S3 = os.environ.get("PYSCORE_TEST_S3", "")
pytestmark = pytest.mark.skipif(not S3, reason="needs PYSCORE_TEST_S3 (an S3 server)")


def s3_client(secret: str | None = None):
    endpoint, key, real_secret = S3.split(",")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret or real_secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def s3_args(secret: str | None = None) -> list[str]:
    endpoint, key, real_secret = S3.split(",")
    return [
        "--s3-endpoint",
        endpoint,
        "--s3-access-key",
        key,
        "--s3-secret-key",
        secret or real_secret,
    ]


def import_score(data_dir: Path, *args: str, check: bool = True):
    return run(SERVER, "import", "score", "--data-dir", str(data_dir), *args, check=check)


def moved(tmp_path: Path, song: SongPlatform) -> Server:
    """A pyscore platform holding SONG's metadata."""
    server = init_server(tmp_path / "data")
    with SongApiDouble(song) as api:
        run(
            SERVER,
            "import",
            "song",
            "--data-dir",
            str(server.data_dir),
            "--song-url",
            api.url,
            check=True,
        )
    return server


def by_state(song: SongPlatform, state: str) -> dict[str, bytes]:
    return {
        f["objectId"]: song.content[f["objectId"]]
        for a in song.analyses.values()
        if a["analysisState"] == state
        for f in a["files"]
    }


def ids(song: SongPlatform) -> dict[str, str]:
    """Object ids by file name (the example platform's names are unique)."""
    return {f["fileName"]: f["objectId"] for a in song.analyses.values() for f in a["files"]}


def count_of(out: str, label: str) -> int:
    """A count of the summary table."""
    line = next(x for x in out.splitlines() if x.startswith(label))
    return int(line.rsplit(None, 1)[-1].replace(",", ""))


def check_served(server: Server, song: SongPlatform, tmp_path: Path, skip: set[str]) -> None:
    """Every published object by its old id, byte-identical (score-client, and the Java
    client's calls); unpublished and suppressed ones refused."""
    reader = server.token("PROGRAMDATA-ABC.READ PROGRAMDATA-XYZ.READ")
    names = {i: name for name, i in ids(song).items()}
    for object_id, data in by_state(song, "PUBLISHED").items():
        if object_id in skip:
            continue
        out = tmp_path / "got" / object_id
        done = server.client(
            "download", "--object-id", object_id, "--output-dir", str(out), token=reader
        )
        assert done.returncode == 0, done.stderr
        name = names[object_id]  # the index file of a data file comes along
        (got,) = [p for p in out.rglob(name) if ".score-client" not in p.parts]
        assert got.read_bytes() == data
        # the Java client: the entity, then the whole object's specification and its parts
        check_entity(json_of(call("GET", f"{server.url}/entities/{object_id}", OBJ, reader)))
        spec = json_of(
            call("GET", f"{server.url}/download/{object_id}?offset=0&length=-1", OBJ, reader)
        )
        check_spec(spec, object_id, len(data))
        assert spec["objectMd5"] == hashlib.md5(data).hexdigest()
        body = b""
        for part in spec["parts"]:
            end = part["offset"] + part["partSize"] - 1
            r = httpx.get(part["url"], headers={"Range": f"bytes={part['offset']}-{end}"})
            assert r.status_code in (200, 206), r.text
            body += r.content
        assert body == data
    for state in ("UNPUBLISHED", "SUPPRESSED"):
        for object_id in by_state(song, state):
            r = call("GET", f"{server.url}/download/{object_id}?offset=0&length=-1", OBJ, reader)
            assert r.status_code == 400 and "PUBLISHED" in r.text, r.text


def test_a_single_bucket_is_adopted_in_place(tmp_path: Path):
    song = example_platform()
    sample = next(iter(song.samples))
    notes = song.submit("ABC", ("qcMetrics", 1), [sample], {"notes.txt": b"n" * 900}, {})
    song.change(notes, "PUBLISHED")
    server = moved(tmp_path, song)
    named = ids(song)
    bam, no_meta, wrong = named["D1.bam"], named["X1.bam"], named["notes.txt"]
    orphan = str(uuid.uuid4())
    song.content[orphan] = b"an object SONG does not know"
    bucket = f"score-{uuid.uuid4().hex[:10]}"
    s3 = s3_client()
    write_score_bucket(s3, song, bucket, without_meta={no_meta: "md5chksum"})
    # one object differs from SONG's record; one upload is in progress
    s3.put_object(Bucket=bucket, Key=f"data/{wrong}", Body=b"not what SONG says")
    s3.put_object(Bucket=bucket, Key=f"upload/{bam}_up-1/.meta", Body=b"{}")
    out = import_score(server.data_dir, "--bucket", f"s3://{bucket}", *s3_args()).stdout
    assert f"{wrong}: .meta says 900 bytes, the bucket holds 18" in out, out
    assert f"Objects without a SONG file (not served):\n  {orphan}" in out
    assert f"{bam} upload up-1 (s3://{bucket})" in out
    before = fingerprint(server.data_dir)
    again = import_score(server.data_dir, "--bucket", f"s3://{bucket}", *s3_args()).stdout
    assert count_of(again, "adopted (new)") == count_of(again, "adopted (changed)") == 0
    assert count_of(again, "adopted before, unchanged") == count_of(out, "adopted (new)")
    assert fingerprint(server.data_dir) == before  # a second import is a no-op
    with server:
        check_served(server, song, tmp_path, skip={wrong})
        reader = server.token("PROGRAMDATA-ABC.READ PROGRAMDATA-XYZ.READ")
        r = call("GET", f"{server.url}/download/{wrong}?offset=0&length=-1", OBJ, reader)
        assert r.status_code == 404, r.text  # unlike SONG's record: not served
        ping = httpx.get(f"{server.url}/download/ping")
        assert ping.status_code == 200 and httpx.get(ping.text).status_code == 200


def test_partitioned_buckets_with_a_state_bucket_apart(tmp_path: Path):
    song = example_platform()
    server = moved(tmp_path, song)
    base, state = f"score-{uuid.uuid4().hex[:8]}", f"state-{uuid.uuid4().hex[:8]}"
    published = list(by_state(song, "PUBLISHED"))
    old = published[0]  # written before partitioning: in the base buckets
    write_score_bucket(
        s3_client(), song, base, state_bucket=state, pool=3, key_length=2, relocated=(old,)
    )
    homes = {partition(base, i, 3, 2) for i in song.content}
    assert len(homes) > 1  # the objects really are spread over partitions
    args = ["--bucket", f"s3://{base}", "--state-bucket", f"s3://{state}"]
    args += ["--partitions", "3", "--partition-key-length", "2", *s3_args()]
    out = import_score(server.data_dir, *args).stdout
    assert count_of(out, "adopted (new)") == len(song.content)
    assert count_of(out, "not as SONG says") == count_of(out, "SONG files without") == 0
    with SongApiDouble(song) as api:
        verify = "import", "verify", "--data-dir", str(server.data_dir), "--song-url", api.url
        verdict = run(SERVER, *verify)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "Everything SONG and Score have is here, equal." in verdict.stdout
    with server:
        check_served(server, song, tmp_path, skip=set())


# -- bad input: one line, a non-zero exit, nothing changed ------------------------------------
def test_a_meta_that_is_not_json_changes_nothing(tmp_path: Path):
    song = example_platform()
    server = moved(tmp_path, song)
    bucket = f"score-{uuid.uuid4().hex[:10]}"
    s3 = s3_client()
    write_score_bucket(s3, song, bucket)
    broken = next(iter(song.content))
    s3.put_object(Bucket=bucket, Key=f"data/{broken}.meta", Body=b"<xml>not json</xml>")
    settings = (server.data_dir / "server.json").read_text()
    before = fingerprint(server.data_dir)
    line = one_line_error(
        import_score(server.data_dir, "--bucket", f"s3://{bucket}", *s3_args(), check=False)
    )
    assert f"s3://{bucket}/data/{broken}.meta is not Score's ObjectSpecification JSON" in line
    assert fingerprint(server.data_dir) == before
    assert (server.data_dir / "server.json").read_text() == settings


def test_a_bucket_without_permission_changes_nothing(tmp_path: Path):
    song = example_platform()
    server = moved(tmp_path, song)
    bucket = f"score-{uuid.uuid4().hex[:10]}"
    write_score_bucket(s3_client(), song, bucket)
    settings = (server.data_dir / "server.json").read_text()
    before = fingerprint(server.data_dir)
    line = one_line_error(
        import_score(
            server.data_dir, "--bucket", f"s3://{bucket}", *s3_args("wrong-secret"), check=False
        )
    )
    assert f"cannot read s3://{bucket}:" in line
    assert fingerprint(server.data_dir) == before
    assert (server.data_dir / "server.json").read_text() == settings
    assert json.loads(settings)["store"] != f"s3://{bucket}"
