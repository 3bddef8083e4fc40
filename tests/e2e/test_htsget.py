"""GA4GH htsget 1.3 tickets of a real score-server, followed end to end.

A ticket's blocks (data: URIs and signed, ranged storage URLs) are fetched and concatenated the
way an htsget client does; the result must be one well-formed file (a single header, an EOF
marker, whole records) whose records overlapping the requested region are exactly what
samtools / bcftools give for that region on a local copy of the same file. Servers may return
extra records outside the region (index chunks are coarse), so results are filtered by region
before comparing. Coordinates in tickets are 0-based, half-open.
"""

from __future__ import annotations

import base64
import functools
import gzip
import os
import random
import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Optional
from urllib.parse import unquote_to_bytes

import httpx
import pytest

from tests.api import bearer
from tests.conftest import local_store_only, need

CONTIGS = {"chr1": 120_000, "chr2": 80_000, "chr3": 40_000}
FILES = {"bam": "DONOR-1-N.bam", "cram": "DONOR-2-N.cram", "vcf": "DONOR-1-N.vcf.gz"}
ENDPOINT = {"bam": "reads", "cram": "reads", "vcf": "variants"}
FORMAT = {"bam": "BAM", "cram": "CRAM", "vcf": "VCF"}
KINDS = tuple(FILES)
MEDIA = "application/vnd.ga4gh.htsget.v1.3.0+json"
UNMAPPED = 150  # the demo's unplaced unmapped reads, sorted last
RANDOM_PER_KIND = 15
TOOL_ENV = {"REF_PATH": "/nonexistent"}  # never fetch reference sequences from the network

Region = tuple[str, Optional[int], Optional[int]]  # referenceName ("*": unplaced), start, end


# -- regions --------------------------------------------------------------------------------
def fixed_regions(kind: str) -> list[tuple[str, Region]]:
    out: list[tuple[str, Region]] = [
        ("contig-start", ("chr1", 0, 500)),
        ("first-base", ("chr2", 0, 1)),
        ("contig-end", ("chr3", 39_000, 40_000)),
        ("last-bases", ("chr2", 79_900, 80_000)),
        ("past-contig-end", ("chr2", 79_000, 95_000)),
        ("beyond-contig", ("chr1", 130_000, 140_000)),
        ("whole-contig", ("chr2", None, None)),
        ("start-only", ("chr1", 110_000, None)),
        ("end-only", ("chr3", None, 700)),
        # the demo data leaves the last bases of each contig empty (reads start before
        # length-110 and span at most 103 bp; variants sit at 1..length-2)
        ("empty", ("chr3", 39_998, 40_000)),
        ("zero-length", ("chr1", 5_000, 5_000)),
    ]
    if kind != "vcf":
        out.append(("unmapped", ("*", None, None)))
    return out


def random_regions(kind: str) -> list[tuple[str, Region]]:
    rng = random.Random(f"pyscore-htsget-{kind}")  # str seeds are stable across runs
    out: list[tuple[str, Region]] = []
    for i in range(RANDOM_PER_KIND):
        contig = rng.choice(list(CONTIGS))
        start = rng.randrange(CONTIGS[contig])
        span = rng.choice((1, 100, 1_000, 5_000, 25_000))
        out.append((f"random{i:02d}", (contig, start, min(start + span, CONTIGS[contig]))))
    return out


REGION_CASES = [
    pytest.param(kind, region, id=f"{kind}-{label}")
    for kind in KINDS
    for label, region in fixed_regions(kind) + random_regions(kind)
]


def region_params(region: Region) -> dict[str, str | int]:
    name, start, end = region
    params: dict[str, str | int] = {"referenceName": name}
    if start is not None:
        params["start"] = start
    if end is not None:
        params["end"] = end
    return params


def tool_region(kind: str, region: Region) -> str:
    """The region in samtools / bcftools syntax (1-based, inclusive)."""
    name, start, end = region
    if name == "*" or (start is None and end is None):
        return name
    lo = (start or 0) + 1
    if end is None:  # bcftools reads `contig:pos` as one position, samtools as pos to the end
        return f"{name}:{lo}-" if kind == "vcf" else f"{name}:{lo}"
    return f"{name}:{lo}-{end}"


def ref_span(cigar: str) -> int:
    return sum(int(n) for n, op in re.findall(r"(\d+)([MIDNSHP=X])", cigar) if op in "MDN=X")


def overlaps(kind: str, line: str, region: Region) -> bool:
    """Whether a SAM / VCF text record overlaps the region (htslib's rule: a record without
    reference span covers one base)."""
    name, start, end = region
    cells = line.split("\t")
    if kind == "vcf":
        chrom, pos0, span = cells[0], int(cells[1]) - 1, len(cells[3])
    else:
        chrom, pos0, span = cells[2], int(cells[3]) - 1, max(ref_span(cells[5]), 1)
    if name == "*":
        return chrom == "*"
    lo = start or 0
    hi = end if end is not None else 2**31
    return chrom == name and lo < hi and pos0 < hi and pos0 + span > lo


# -- peer tools -----------------------------------------------------------------------------
def tool(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **TOOL_ENV, **(env or {})},
    )
    assert result.returncode == 0, f"{args} failed ({result.returncode}): {result.stderr}"
    return result


def samtools_args(kind: str, reference: Path) -> list[str | Path]:
    return ["samtools", "view", *(["-T", reference] if kind == "cram" else [])]


def local_records(kind: str, files: Path, region: Region | None = None) -> list[str]:
    """samtools view / bcftools view -H of the local copy, for a region or the whole file."""
    path = files / FILES[kind]
    if region is not None and region[1] is not None and region[1] == region[2]:
        return []  # a zero-length region holds nothing (and the tools reject it)
    where = [] if region is None else [tool_region(kind, region)]
    if kind == "vcf":
        args: list[str | Path] = [
            "bcftools",
            "view",
            "-H",
            *(["-r", *where] if where else []),
            path,
        ]
    else:
        args = [*samtools_args(kind, files / "reference.fa"), path, *where]
    return tool(*args).stdout.splitlines()


@functools.cache
def local_header(kind: str, files: Path) -> list[str]:
    path = files / FILES[kind]
    if kind == "vcf":
        return tool("bcftools", "view", "-h", "--no-version", path).stdout.splitlines()
    return tool("samtools", "view", "-H", "--no-PG", path).stdout.splitlines()


@functools.cache
def local_bytes(path: Path, decompress: bool = False) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if decompress else data


def bam_header_length(raw: bytes) -> int:
    """Bytes of the uncompressed BAM stream taken by the header (magic, text, references)."""
    l_text = struct.unpack_from("<i", raw, 4)[0]
    pos = 8 + l_text
    n_ref = struct.unpack_from("<i", raw, pos)[0]
    pos += 4
    for _ in range(n_ref):
        pos += 4 + struct.unpack_from("<i", raw, pos)[0] + 4
    return pos


def valid_records(kind: str, path: Path, files: Path) -> list[str]:
    """Check that an assembled file is one valid file with the local copy's header and no
    header anywhere in its body; return its records as text, in file order."""
    local = local_bytes(files / FILES[kind])
    data = path.read_bytes()
    if kind == "vcf":
        lines = gzip.decompress(data).decode().splitlines()
        n_head = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        assert lines[:n_head] == local_header(kind, files), "header differs (or repeats)"
        stray = [line for line in lines[n_head:] if line.startswith("#") or not line]
        assert not stray, f"header (or blank) lines in the body: {stray[:3]}"
        result = tool("bcftools", "view", "--no-version", path)
        assert result.stderr == "", result.stderr
        records = tool("bcftools", "view", "-H", path).stdout.splitlines()
        assert records == lines[n_head:]
        return records
    quick = tool("samtools", "quickcheck", "-v", path)
    assert quick.stdout == "" and quick.stderr == ""
    if kind == "bam":
        raw, local_raw = gzip.decompress(data), local_bytes(files / FILES[kind], True)
        head = bam_header_length(local_raw)
        assert raw[:head] == local_raw[:head]
        assert raw.count(b"BAM\x01") == 1, "a second BAM header inside the body"
        assert data.endswith(local[-28:]), "no BGZF EOF marker"
    else:
        magic = local[:6]  # CRAM + major/minor version
        assert data.startswith(magic)
        assert data.count(magic) == 1, "a second CRAM file definition inside the body"
        assert data.endswith(local[-38:]), "no CRAM EOF container"
    header = tool(
        "samtools",
        "view",
        "-H",
        "--no-PG",
        *(["-T", files / "reference.fa"] if kind == "cram" else []),
        path,
    )
    assert header.stdout.splitlines() == local_header(kind, files)
    result = tool(*samtools_args(kind, files / "reference.fa"), path)
    assert result.stderr == "", result.stderr
    return result.stdout.splitlines()


# -- htsget ---------------------------------------------------------------------------------
def block(entry: dict, storage: httpx.Client, local: bytes) -> bytes:
    """The bytes of one ticket URL: a data: URI decoded, or a storage URL fetched with the
    ticket's headers only (never the bearer token, which is for the ticket server)."""
    url = entry["url"]
    if url.startswith("data:"):
        meta, sep, payload = url[5:].partition(",")
        assert sep, url[:80]
        if meta.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return unquote_to_bytes(payload)
    assert url.startswith(("http://", "https://")), url[:80]
    headers = entry.get("headers") or {}
    response = storage.get(url, headers=headers)
    assert response.status_code in (200, 206), (response.status_code, response.text[:300])
    data = response.content
    wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("Range", ""))
    if wanted:
        lo, hi = int(wanted[1]), int(wanted[2])
        assert response.status_code == 206, "the storage URL ignored the Range header"
        assert data == local[lo : hi + 1], f"storage bytes {lo}-{hi} differ from the file"
    return data


def assemble(ticket: dict, dest: Path, local: bytes) -> Path:
    """Concatenate a ticket's blocks, in order, into `dest`."""
    urls = ticket["htsget"]["urls"]
    assert isinstance(urls, list) and urls
    classes = [entry.get("class") for entry in urls]
    if any(c is not None for c in classes):  # header blocks, if labelled, come first
        assert all(c in ("header", "body") for c in classes), classes
        assert classes == sorted(classes, key=lambda c: c != "header"), classes
    with httpx.Client(timeout=30) as storage, open(dest, "wb") as out:
        for entry in urls:
            out.write(block(entry, storage, local))
    return dest


class Htsget:
    """Ticket requests to the demo server; `token` defaults to a DEMO reader's."""

    def __init__(self, base: str, ids: dict[str, str], token: str) -> None:
        self.base, self.ids, self.token = base, ids, token

    def url(self, kind_or_endpoint: str, name: str | None = None) -> str:
        endpoint = ENDPOINT.get(kind_or_endpoint, kind_or_endpoint)
        object_id = self.ids.get(name or FILES.get(kind_or_endpoint, ""), name)
        return f"{self.base}/htsget/{endpoint}/{object_id}"

    def headers(self, token: str | None) -> dict[str, str]:
        return bearer(token)

    def get(
        self,
        kind: str,
        params: dict | None = None,
        name: str | None = None,
        token: str | None = "default",
    ) -> httpx.Response:
        token = self.token if token == "default" else token
        return httpx.get(
            self.url(kind, name), params=params, headers=self.headers(token), timeout=30
        )

    def post(
        self, kind: str, body: dict | str, name: str | None = None, token: str | None = "default"
    ) -> httpx.Response:
        token = self.token if token == "default" else token
        content = body if isinstance(body, str) else None
        return httpx.post(
            self.url(kind, name),
            json=None if content else body,
            content=content,
            headers={**self.headers(token), "Content-Type": "application/json"},
            timeout=30,
        )


def ok_ticket(response: httpx.Response, kind: str) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(MEDIA)
    ticket = response.json()
    assert ticket["htsget"]["format"] == FORMAT[kind]
    token = response.request.headers.get("authorization", "").removeprefix("Bearer ")
    assert not token or token not in response.text, "the bearer token leaked into the ticket"
    return ticket


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tools() -> None:
    for name in ("samtools", "bcftools"):
        need(name)


@pytest.fixture(scope="module")
def ids(demo_server) -> dict[str, str]:
    """file name -> object id, from the demo manifest (columns object_id, file_name)."""
    rows = demo_server.manifest.read_text().splitlines()[1:]
    return {cells[4]: cells[2] for cells in (row.split("\t") for row in rows if row)}


@pytest.fixture(scope="module")
def reader(demo_server) -> str:
    return demo_server.token("PROGRAMDATA-DEMO.READ", "--user", "htsget-reader")


@pytest.fixture(scope="module")
def api(demo_server, ids, reader, tools) -> Htsget:
    return Htsget(demo_server.url, ids, reader)


@pytest.fixture(scope="module")
def fetch(api, demo_files, tmp_path_factory) -> Callable[..., Path]:
    """A ticket's blocks concatenated into a file, for a kind and GET params or POST body."""
    counter = iter(range(10**6))
    local = {kind: local_bytes(demo_files / FILES[kind]) for kind in KINDS}
    folder = tmp_path_factory.mktemp("htsget")

    def run(kind: str, params: dict | None = None, body: dict | None = None) -> Path:
        params = {"format": FORMAT[kind], **(params or {})}
        response = api.post(kind, body) if body is not None else api.get(kind, params)
        suffix = {"bam": "bam", "cram": "cram", "vcf": "vcf.gz"}[kind]
        return assemble(
            ok_ticket(response, kind), folder / f"{next(counter)}.{suffix}", local[kind]
        )

    return run


# -- regions --------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "region"), REGION_CASES)
def test_region_records_equal_peer_tool(fetch, demo_files, kind, region):
    records = valid_records(kind, fetch(kind, region_params(region)), demo_files)
    got = [line for line in records if overlaps(kind, line, region)]
    want = local_records(kind, demo_files, region)
    if region[0] == "*":
        assert len(want) == UNMAPPED
    if region in (("chr3", 39_998, 40_000), ("chr1", 130_000, 140_000)):
        assert want == [], "the demo data is not empty where these cases expect"
    assert len(got) == len(want)
    assert got == want


def test_random_regions_cover_data(demo_files, tools):
    """A guard on the generator: most random regions hold records."""
    for kind in KINDS:
        held = sum(
            1 for _, region in random_regions(kind) if local_records(kind, demo_files, region)
        )
        assert held >= RANDOM_PER_KIND // 2, kind


@pytest.mark.parametrize("kind", KINDS)
def test_header_class_is_header_only(fetch, api, demo_files, kind):
    ticket = ok_ticket(api.get(kind, {"format": FORMAT[kind], "class": "header"}), kind)
    assert all(entry.get("class", "header") == "header" for entry in ticket["htsget"]["urls"])
    records = valid_records(kind, fetch(kind, {"class": "header"}), demo_files)
    assert records == []
    posted = fetch(kind, body={"format": FORMAT[kind], "class": "header"})
    assert valid_records(kind, posted, demo_files) == []


@pytest.mark.parametrize("kind", KINDS)
def test_no_reference_name_is_whole_file(fetch, demo_files, kind):
    records = valid_records(kind, fetch(kind), demo_files)
    want = local_records(kind, demo_files)
    assert len(records) == len(want)
    assert records == want
    if kind != "vcf":
        assert all(line.split("\t")[2] == "*" for line in records[-UNMAPPED:])


def test_default_format(api, demo_files):
    """Without format=, reads answer BAM and variants VCF."""
    assert ok_ticket(api.get("bam"), "bam")["htsget"]["format"] == "BAM"
    assert ok_ticket(api.get("vcf"), "vcf")["htsget"]["format"] == "VCF"


POST_CASES = [
    ("disjoint", [("chr3", 5_000, 9_000), ("chr1", 10_000, 12_000)]),
    ("overlapping", [("chr1", 20_000, 30_000), ("chr1", 25_000, 40_000)]),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("label", "regions"), POST_CASES, ids=[c[0] for c in POST_CASES])
def test_post_regions(fetch, demo_files, kind, label, regions):
    body = {
        "format": FORMAT[kind],
        "regions": [{"referenceName": n, "start": s, "end": e} for n, s, e in regions],
    }
    records = valid_records(kind, fetch(kind, body=body), demo_files)
    for region in regions:
        want = local_records(kind, demo_files, region)
        assert want
        assert [line for line in records if overlaps(kind, line, region)] == want
    wanted = [line for line in records if any(overlaps(kind, line, r) for r in regions)]
    assert len(wanted) == len(set(wanted)), "records returned twice"
    if label == "overlapping":  # the union of the two is one contiguous region
        assert wanted == local_records(kind, demo_files, ("chr1", 20_000, 40_000))


# -- peer clients ---------------------------------------------------------------------------
PYPI_CASES = [
    ("bam", ("chr2", 30_000, 34_000)),
    ("cram", ("chr1", 60_000, 61_000)),
    ("vcf", ("chr1", 10_000, 50_000)),
]


@pytest.mark.parametrize(("kind", "region"), PYPI_CASES, ids=[c[0] for c in PYPI_CASES])
def test_pypi_htsget_client(api, demo_files, tmp_path, kind, region):
    htsget = pytest.importorskip("htsget")
    name, start, end = region
    out = tmp_path / f"out.{FILES[kind].split('.', 1)[1]}"
    with open(out, "wb") as f:
        htsget.get(
            api.url(kind),
            f,
            reference_name=name,
            start=start,
            end=end,
            data_format=FORMAT[kind],
            bearer_token=api.token,
            max_retries=0,
            timeout=30,
        )
    records = valid_records(kind, out, demo_files)
    want = local_records(kind, demo_files, region)
    assert want
    assert [line for line in records if overlaps(kind, line, region)] == want


HTSLIB_CASES = [
    ("bam", ("chr2", 40_000, 42_000)),
    ("cram", ("chr3", 1_000, 3_000)),
    ("bam", ("*", None, None)),
    ("cram", ("*", None, None)),
    ("vcf", ("chr2", 5_000, 30_000)),
]


@pytest.mark.parametrize(
    ("kind", "region"), HTSLIB_CASES, ids=[f"{k}-{r[0]}" for k, r in HTSLIB_CASES]
)
def test_htslib_reads_htsget_url(api, demo_files, tmp_path, kind, region):
    """samtools / bcftools given the ticket URL follow the ticket themselves."""
    token_file = tmp_path / "token"
    token_file.write_text(api.token)
    env = {
        "HTS_AUTH_LOCATION": str(token_file),
        "HTS_ALLOW_UNENCRYPTED_AUTHORIZATION_HEADER": "I understand the risks",
    }
    url = str(httpx.URL(api.url(kind), params={"format": FORMAT[kind], **region_params(region)}))
    if kind == "vcf":
        result = tool("bcftools", "view", "-H", url, env=env)
    else:
        result = tool(*samtools_args(kind, demo_files / "reference.fa"), url, env=env)
    got = [line for line in result.stdout.splitlines() if overlaps(kind, line, region)]
    want = local_records(kind, demo_files, region)
    assert want
    assert got == want


@local_store_only
def test_storage_urls_are_bound_to_their_range(api, demo_files):
    """A ranged ticket URL serves its own bytes without a token, and nothing else."""
    ticket = ok_ticket(api.get("bam", {"referenceName": "chr2", "start": 1000, "end": 2000}), "bam")
    entry = next(
        e
        for e in ticket["htsget"]["urls"]
        if not e["url"].startswith("data:") and e.get("class") == "body"
    )
    lo, hi = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", entry["headers"]["Range"]).groups())
    assert lo > 0
    local = local_bytes(demo_files / FILES["bam"])
    with httpx.Client(timeout=30) as storage:
        assert block(entry, storage, local) == local[lo : hi + 1]
        wider = storage.get(entry["url"], headers={"Range": f"bytes=0-{len(local) - 1}"})
        assert wider.status_code in (403, 416), wider.status_code
        url = httpx.URL(entry["url"])
        widened = url.copy_set_param("range", f"0-{hi}")
        tampered = storage.get(widened, headers={"Range": f"bytes=0-{hi}"})
        assert tampered.status_code == 403, tampered.status_code
        unsigned = storage.get(url.copy_with(params={}), headers=entry["headers"])
        assert unsigned.status_code in (401, 403), unsigned.status_code


# -- errors ---------------------------------------------------------------------------------
# (label, kind or endpoint, file name or None for the kind's file, GET params (dict) or POST
#  body (str), token ("reader", "none", "garbage", "other-study"), status, htsget error)
ERRORS = [
    ("unknown-id-reads", "reads", "no-such-object", {}, "reader", 404, "NotFound"),
    (
        "unknown-id-variants",
        "variants",
        "00000000-0000-0000-0000-000000000000",
        {},
        "reader",
        404,
        "NotFound",
    ),
    ("cram-format-on-bam", "bam", None, {"format": "CRAM"}, "reader", 400, "UnsupportedFormat"),
    ("bam-format-on-cram", "cram", None, {"format": "BAM"}, "reader", 400, "UnsupportedFormat"),
    ("bcf-format-on-vcf", "vcf", None, {"format": "BCF"}, "reader", 400, "UnsupportedFormat"),
    ("vcf-format-on-reads", "bam", None, {"format": "VCF"}, "reader", 400, "UnsupportedFormat"),
    ("sam-format", "bam", None, {"format": "SAM"}, "reader", 400, "UnsupportedFormat"),
    ("reads-endpoint-on-vcf", "reads", FILES["vcf"], {}, "reader", 400, "UnsupportedFormat"),
    ("variants-endpoint-on-bam", "variants", FILES["bam"], {}, "reader", 400, "UnsupportedFormat"),
    ("clinical-tsv-on-reads", "reads", "clinical.tsv", {}, "none", 400, "UnsupportedFormat"),
    (
        "clinical-tsv-on-variants",
        "variants",
        "clinical.tsv",
        {},
        "reader",
        400,
        "UnsupportedFormat",
    ),
    ("unknown-reference-bam", "bam", None, {"referenceName": "chr9"}, "reader", 404, "NotFound"),
    (
        "unknown-reference-cram",
        "cram",
        None,
        {"format": "CRAM", "referenceName": "chrX", "start": 0, "end": 10},
        "reader",
        404,
        "NotFound",
    ),
    ("cram-asked-as-default-bam", "cram", None, {}, "reader", 400, "UnsupportedFormat"),
    ("unknown-reference-vcf", "vcf", None, {"referenceName": "1"}, "reader", 404, "NotFound"),
    (
        "start-after-end",
        "bam",
        None,
        {"referenceName": "chr1", "start": 5000, "end": 4000},
        "reader",
        400,
        "InvalidRange",
    ),
    (
        "start-after-end-vcf",
        "vcf",
        None,
        {"referenceName": "chr1", "start": 10, "end": 9},
        "reader",
        400,
        "InvalidRange",
    ),
    ("start-without-reference", "bam", None, {"start": 100}, "reader", 400, "InvalidInput"),
    ("end-without-reference", "vcf", None, {"end": 100}, "reader", 400, "InvalidInput"),
    (
        "header-class-with-region",
        "bam",
        None,
        {"class": "header", "referenceName": "chr1"},
        "reader",
        400,
        "InvalidInput",
    ),
    (
        "header-class-with-region-vcf",
        "vcf",
        None,
        {"class": "header", "referenceName": "chr2", "start": 0, "end": 100},
        "reader",
        400,
        "InvalidInput",
    ),
    (
        "start-not-a-number",
        "bam",
        None,
        {"referenceName": "chr1", "start": "one"},
        "reader",
        400,
        "InvalidInput",
    ),
    (
        "unmapped-with-start",
        "bam",
        None,
        {"referenceName": "*", "start": 10},
        "reader",
        400,
        "InvalidInput",
    ),
    ("no-token", "bam", None, {}, "none", 401, "InvalidAuthentication"),
    ("no-token-vcf", "vcf", None, {"referenceName": "chr1"}, "none", 401, "InvalidAuthentication"),
    ("bad-token", "cram", None, {}, "garbage", 401, "InvalidAuthentication"),
    ("other-study-token", "bam", None, {}, "other-study", 403, "PermissionDenied"),
    ("other-study-token-vcf", "vcf", None, {}, "other-study", 403, "PermissionDenied"),
    ("post-not-json", "bam", None, "{not json", "reader", 400, "InvalidInput"),
    (
        "post-region-without-name",
        "bam",
        None,
        '{"format": "BAM", "regions": [{"start": 1, "end": 100}]}',
        "reader",
        400,
        "InvalidInput",
    ),
    (
        "post-start-after-end",
        "vcf",
        None,
        '{"regions": [{"referenceName": "chr1", "start": 100, "end": 1}]}',
        "reader",
        400,
        "InvalidRange",
    ),
    (
        "post-unknown-reference",
        "cram",
        None,
        '{"format": "CRAM", "regions": [{"referenceName": "chr1"}, {"referenceName": "chr7"}]}',
        "reader",
        404,
        "NotFound",
    ),
    ("post-format-mismatch", "vcf", None, '{"format": "BAM"}', "reader", 400, "UnsupportedFormat"),
]


@pytest.fixture(scope="module")
def tokens(demo_server, reader) -> dict[str, str | None]:
    return {
        "reader": reader,
        "none": None,
        "garbage": "not-a-real-token",
        "other-study": demo_server.token("PROGRAMDATA-OTHER.READ", "--user", "outsider"),
    }


@pytest.mark.parametrize(
    ("kind", "name", "request_", "who", "status", "error"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_errors_are_htsget_json(api, tokens, kind, name, request_, who, status, error):
    name = api.ids.get(name, name) if name else None
    if isinstance(request_, str):
        response = api.post(kind, request_, name=name, token=tokens[who])
    else:
        response = api.get(kind, request_, name=name, token=tokens[who])
    assert response.status_code == status, response.text
    assert "json" in response.headers["content-type"]
    body = response.json()
    assert set(body) == {"htsget"}, body
    assert set(body["htsget"]) == {"error", "message"}, body
    assert body["htsget"]["error"] == error, body
    assert isinstance(body["htsget"]["message"], str) and body["htsget"]["message"]
    if status == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer")


def test_errors_cover_each_kind():
    """A guard on the table: every error type the brief names appears."""
    kinds = {case[-1] for case in ERRORS}
    assert kinds >= {
        "NotFound",
        "UnsupportedFormat",
        "InvalidRange",
        "InvalidInput",
        "InvalidAuthentication",
        "PermissionDenied",
    }


# -- service-info ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "formats"), [("reads", {"BAM", "CRAM"}), ("variants", {"VCF", "BCF"})]
)
def test_service_info(demo_server, endpoint, formats):
    response = httpx.get(f"{demo_server.url}/htsget/{endpoint}/service-info", timeout=30)
    assert response.status_code == 200, response.text
    assert "json" in response.headers["content-type"]
    info = response.json()
    assert info["type"]["artifact"] == "htsget"
    assert info["type"]["group"] == "org.ga4gh"
    assert info["htsget"]["datatype"] == endpoint
    assert set(info["htsget"]["formats"]) == formats


# -- a stored object that changes -----------------------------------------------------------
def test_a_replaced_object_gets_tickets_for_its_new_bytes(fresh_server, tmp_path, tools):
    """The server keeps parsed indexes and headers between tickets; when an object's bytes are
    replaced (re-ingested under the same object id), tickets must follow the new file."""
    from pyscore.server import objects
    from pyscore.server.demo import data as demo
    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings
    from tests.publish import publish

    (tmp_path / "ref").mkdir()
    fasta = demo.reference(tmp_path / "ref", random.Random(1))
    versions = []
    for seed in (1, 2):  # same file name, different reads
        folder = tmp_path / f"v{seed}"
        folder.mkdir()
        versions.append(demo.alignments(folder, "DONOR-9-N", fasta, random.Random(seed), 400))
    first = versions[0]
    bam_id, bai_id = publish(
        fresh_server.data_dir, [first, Path(f"{first}.bai")], study="MEMO", access="open"
    )
    region = ("chr1", 1_000, 60_000)

    def served(tag: str, expected: Path) -> list[str]:
        response = httpx.post(
            f"{fresh_server.url}/htsget/reads/{bam_id}",
            json={
                "format": "BAM",
                "regions": [{"referenceName": region[0], "start": region[1], "end": region[2]}],
            },
            timeout=30,
        )
        ticket = ok_ticket(response, "bam")
        dest = tmp_path / f"{tag}.bam"
        with httpx.Client(timeout=30) as storage, open(dest, "wb") as out:
            for entry in ticket["htsget"]["urls"]:
                out.write(block(entry, storage, expected.read_bytes()))
        lines = tool("samtools", "view", dest).stdout.splitlines()
        return [line for line in lines if overlaps("bam", line, region)]

    def local(path: Path) -> list[str]:
        return tool("samtools", "view", path, tool_region("bam", region)).stdout.splitlines()

    assert served("before", first) == local(first)
    second = versions[1]
    platform = Platform.open(Settings.load(fresh_server.data_dir))
    with platform.db.session() as s:
        objects.ingest(s, platform.store, bam_id, second, platform.settings.part_size)
        objects.ingest(
            s, platform.store, bai_id, Path(f"{second}.bai"), platform.settings.part_size
        )
    assert local(second) != local(first)
    assert served("after", second) == local(second)
