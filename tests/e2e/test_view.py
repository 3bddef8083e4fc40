"""score-client view through the real CLI against a real score-server, with samtools/bcftools
on local copies of the same demo files as the reference implementation.

Records are compared as text (SAM lines without header, VCF lines without header) and in
order: score-client writes each --query region in turn, so the expected output is samtools /
bcftools run once per region, concatenated.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pyscore.client.view import slicing
from pyscore.client.view.regions import parse_region
from pyscore.client.view.slicing import Source, slice_reads
from pyscore.wire.manifest import parse_download
from tests.conftest import CLIENT, need, one_line_error
from tests.e2e.test_download import demo_refused

CONTIGS = {"chr1": 120_000, "chr2": 80_000, "chr3": 40_000}
# The demo data is built so that nothing lies at the very end of a contig: reads start before
# length-110 and span at most 103 bp, variants sit at positions 1..length-2.
EMPTY = {"bam": "chr3:39995-40000", "cram": "chr1:119995-120000", "vcf": "chr3:39999-40000"}
FILES = {"bam": "DONOR-1-N.bam", "cram": "DONOR-2-N.cram", "vcf": "DONOR-1-N.vcf.gz"}
CASES_PER_KIND = 25


# -- helpers --------------------------------------------------------------------------------
def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def body(text: str, comment: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(comment)]


def header(text: str, comment: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(comment)]


def peer(*args: str | Path) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REF_PATH": "/nonexistent"},
    )
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def plain(region: str) -> str:
    return region.replace(",", "")


def samtools_records(path: Path, regions: list[str], reference: Path | None = None) -> list[str]:
    ref = ["-T", reference] if reference else []
    if not regions:
        return peer("samtools", "view", *ref, path).splitlines()
    out: list[str] = []
    for region in regions:
        out += peer("samtools", "view", *ref, path, plain(region)).splitlines()
    return out


def bcftools_records(path: Path, regions: list[str]) -> list[str]:
    if not regions:
        return peer("bcftools", "view", "-H", path).splitlines()
    out: list[str] = []
    for region in regions:
        # bcftools reads `contig:start` as one position; samtools/tabix as start to the end
        spec = plain(region) + ("-" if re.fullmatch(r"[^:]+:\d+", plain(region)) else "")
        out += peer("bcftools", "view", "-H", "-r", spec, path).splitlines()
    return out


def expected_records(kind: str, demo_files: Path, regions: list[str]) -> list[str]:
    path = demo_files / FILES[kind]
    if kind == "vcf":
        return bcftools_records(path, regions)
    return samtools_records(path, regions, demo_files / "reference.fa" if kind == "cram" else None)


def ref_span(cigar: str) -> int:
    return sum(int(n) for n, op in re.findall(r"(\d+)([MIDNSHP=X])", cigar) if op in "MDN=X")


def contained(lines: list[str], region: str) -> list[str]:
    """samtools records entirely inside the (1-based, inclusive) region."""
    contig, _, span = plain(region).partition(":")
    start, _, end = span.partition("-")
    lo = int(start) if start else 1
    hi = min(int(end), CONTIGS[contig]) if end else CONTIGS[contig]
    kept = []
    for line in lines:
        cells = line.split("\t")
        pos = int(cells[3])
        last = pos + max(ref_span(cells[5]), 1) - 1
        if pos >= lo and last <= hi:
            kept.append(line)
    return kept


def cases(kind: str) -> list[tuple[str, list[str]]]:
    """Fixed edge cases, then seeded random batches of regions, CASES_PER_KIND in all."""
    fixed = [
        ("contig-start", ["chr1:1-500"]),
        ("contig-end", ["chr3:39000-40000"]),
        ("last-base", ["chr2:80000-80000"]),
        ("past-end-clamped", ["chr2:79000-95000"]),
        ("whole-contig", ["chr2"]),
        ("open-end", ["chr1:110000"]),
        ("empty", [EMPTY[kind]]),
        ("commas", ["chr1:10,000-12,500"]),
        ("overlapping", ["chr1:5000-6000", "chr1:5500-7000"]),
        ("out-of-order", ["chr3:100-900", "chr1:2000-2600", "chr2:1-300"]),
        ("whole-file", []),  # no --query: every record, unmapped reads last
    ]
    rng = random.Random(f"pyscore-view-{kind}")  # str seeds are stable across runs
    out = list(fixed)
    while len(out) < CASES_PER_KIND:
        regions = []
        for _ in range(rng.randint(1, 3)):
            contig = rng.choice(list(CONTIGS))
            start = rng.randint(1, CONTIGS[contig])
            span = rng.choice((1, 20, 300, 2_000, 15_000, None))
            regions.append(
                f"{contig}:{start}" if span is None else f"{contig}:{start}-{start + span - 1}"
            )
        out.append((f"random{len(out) - len(fixed):02d}", regions))
    return out


ALL_CASES = [
    pytest.param(kind, regions, id=f"{kind}-{i:02d}-{label}")
    for kind in ("bam", "cram", "vcf")
    for i, (label, regions) in enumerate(cases(kind))
]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reader(demo_server) -> str:
    return demo_server.token("PROGRAMDATA-DEMO.READ", "--user", "viewer")


@pytest.fixture(scope="module")
def ids(demo_server) -> dict[str, str]:
    """file name -> object id, from the demo manifest."""
    rows = parse_download(demo_server.manifest.read_text(), str(demo_server.manifest))
    return {r.fileName: r.objectId for r in rows}


@pytest.fixture(scope="module")
def tools() -> None:
    for tool in ("samtools", "bcftools"):
        need(tool)


@pytest.fixture(scope="module")
def view(demo_server, demo_files, ids, reader, tools):
    """score-client view of a demo file kind ('bam', 'cram', 'vcf') or a file name."""

    def run(kind: str, *args: str, token: str | None = reader, **kw):
        name = FILES.get(kind, kind)
        extra = (
            ["--reference-file", str(demo_files / "reference.fa")]
            if name.endswith(".cram") and "--reference-file" not in args
            else []
        )
        return demo_server.client(
            "view", "--object-id", ids[name], *extra, *args, token=token, **kw
        )

    return run


def query(regions: list[str]) -> list[str]:
    return ["--query", *regions] if regions else []


# -- records equal samtools / bcftools -------------------------------------------------------
@pytest.mark.parametrize(("kind", "regions"), ALL_CASES)
def test_regions_equal_peer_tool(view, demo_files, kind, regions):
    result = ok(view(kind, *query(regions)))
    comment = "#" if kind == "vcf" else "@"
    want = expected_records(kind, demo_files, regions)
    if regions == [EMPTY[kind]]:
        assert want == [], "the 'empty' case is not empty in the demo data"
    got = body(result.stdout, comment)
    assert len(got) == len(want)
    assert got == want
    assert header(result.stdout, comment), "the header is missing from the SAM/VCF text"
    if not regions and kind != "vcf":  # the whole file ends with the 150 unmapped reads
        assert all(
            cells[2] == "*" and int(cells[1]) & 4
            for cells in (line.split("\t") for line in got[-150:])
        )


@pytest.mark.parametrize(
    ("kind", "regions"),
    [
        ("bam", ["chr1:10000-12000", "chr3:39000-40000"]),
        ("bam", ["*"]),
        ("bam", []),
        ("cram", ["chr2:100-5000"]),
        ("vcf", ["chr3:1-5000", "chr1"]),
        ("vcf", []),
    ],
)
def test_without_htsget_the_original_way_gives_the_same(view, demo_files, kind, regions):
    """view.htsget=false: htslib reads the signed URL itself, as against an original Score."""
    result = ok(view(kind, *query(regions), env={"VIEW_HTSGET": "false"}))
    comment = "#" if kind == "vcf" else "@"
    assert body(result.stdout, comment) == expected_records(kind, demo_files, regions)


def test_random_cases_cover_data(demo_files, tools):
    """The random batches are not all trivially empty (a guard on the generator)."""
    non_empty = sum(
        1
        for _, regions in cases("bam")
        if regions and samtools_records(demo_files / FILES["bam"], regions[:1])
    )
    assert non_empty >= CASES_PER_KIND // 2


def test_repeated_query_option_keeps_all_regions(view, demo_files):
    result = ok(view("bam", "--query", "chr1:1000-1500", "--query", "chr2:1000-1500"))
    want = expected_records("bam", demo_files, ["chr1:1000-1500", "chr2:1000-1500"])
    assert body(result.stdout, "@") == want


@pytest.mark.parametrize("kind", ["bam", "cram"])
def test_unmapped_region_equals_samtools(view, demo_files, kind):
    want = expected_records(kind, demo_files, ["*"])
    assert len(want) == 150  # the demo's unplaced unmapped reads
    result = ok(view(kind, "--query", "*"))
    assert body(result.stdout, "@") == want


# -- htslib writes a BAM's region, not a Python loop -----------------------------------------
class WholeFileTickets:
    """An htsget answer that is more than the region: the whole demo BAM (its blocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def region(self, contig, start, end) -> Path:
        return self.path


def bam_sources(demo_files: Path) -> dict[str, Source]:
    bam = demo_files / FILES["bam"]
    return {
        "indexed": Source(str(bam), f"{bam}.bai", bam.name),
        "htsget": Source(str(bam), None, bam.name, WholeFileTickets(bam)),  # type: ignore[arg-type]
    }


SINGLE = [["chr1:5000-6000"], ["chr2"], ["chr3:39000-40000"], ["chr2:79000-95000"], []]


@pytest.mark.parametrize("how", ["indexed", "htsget"])
@pytest.mark.parametrize("fmt", ["SAM", "BAM"])
def test_one_bam_region_is_written_by_htslib(demo_files, tmp_path, monkeypatch, how, fmt):
    """The records of one region of a BAM are not decoded and written one Python call each
    (~2 µs a record: a 1 Mb region took 5x samtools' time); htslib copies them, and the
    output is what samtools gives, byte for byte what the Python loop wrote."""
    source = bam_sources(demo_files)[how]
    for number, regions in enumerate(SINGLE):
        wanted = [parse_region(r) for r in regions]
        looped, copied = (tmp_path / f"{name}{number}.{fmt.lower()}" for name in ("py", "c"))
        with monkeypatch.context() as patch:
            patch.setattr(slicing, "samtools_can_copy", lambda *args: False, raising=False)
            slice_reads(source, wanted, str(looped), fmt)
        with monkeypatch.context() as patch:
            patch.setattr(slicing, "_records", refuse_python_loop)
            slice_reads(source, wanted, str(copied), fmt)
        assert copied.read_bytes() == looped.read_bytes(), regions
        want = samtools_records(demo_files / FILES["bam"], regions)
        assert want, regions
        assert peer("samtools", "view", copied).splitlines() == want


def refuse_python_loop(*args, **kwargs):
    raise AssertionError("the records went through a Python loop")


# -- --contained ----------------------------------------------------------------------------
CONTAINED = [
    ("bam", "chr1:3000-4000"),
    ("bam", "chr2:50000-52000"),
    ("bam", "chr3:39000-45000"),
    ("bam", "chr1:1-700"),
    ("bam", "chr2:7000-7150"),
    ("cram", "chr2:20000-23000"),
    ("cram", "chr3"),
]


@pytest.mark.parametrize(("kind", "region"), CONTAINED, ids=[f"{k}-{r}" for k, r in CONTAINED])
def test_contained_keeps_reads_fully_inside(view, demo_files, kind, region):
    overlapping = expected_records(kind, demo_files, [region])
    want = contained(overlapping, region)
    if region in ("chr1:3000-4000", "chr2:20000-23000"):  # guard: some reads cross the edges
        assert 0 < len(want) < len(overlapping)
    result = ok(view(kind, "--query", region, "--contained"))
    assert body(result.stdout, "@") == want


# -- --header-only --------------------------------------------------------------------------
def test_header_only_equals_samtools_h(view, demo_files):
    # samtools adds its own @PG line unless --no-PG; score-client keeps the file's header as is
    want = peer("samtools", "view", "-H", "--no-PG", demo_files / FILES["bam"]).splitlines()
    result = ok(view("bam", "--header-only"))
    assert result.stdout.splitlines() == want
    with_query = ok(view("bam", "--header-only", "--query", "chr1:1-50000"))
    assert with_query.stdout.splitlines() == want


def test_header_only_cram_and_vcf(view, demo_files):
    cram = ok(view("cram", "--header-only"))
    assert (
        cram.stdout.splitlines()
        == peer("samtools", "view", "-H", "--no-PG", demo_files / FILES["cram"]).splitlines()
    )
    vcf = ok(view("vcf", "--header-only"))
    assert (
        vcf.stdout.splitlines()
        == peer("bcftools", "view", "-h", "--no-version", demo_files / FILES["vcf"]).splitlines()
    )


def test_header_only_as_bam_file(view, demo_files, tmp_path):
    ok(view("bam", "--header-only", "--output-format", "BAM", "--output-dir", str(tmp_path)))
    written = list(tmp_path.glob("*.bam"))
    assert len(written) == 1
    peer("samtools", "quickcheck", written[0])
    assert peer("samtools", "view", "-H", "--no-PG", written[0]) == peer(
        "samtools", "view", "-H", "--no-PG", demo_files / FILES["bam"]
    )
    assert peer("samtools", "view", written[0]) == ""


# -- output files ---------------------------------------------------------------------------
OUTPUTS = [("bam", "BAM"), ("bam", "CRAM"), ("cram", "BAM"), ("cram", "CRAM"), ("bam", "SAM")]


@pytest.mark.parametrize(("kind", "fmt"), OUTPUTS, ids=[f"{k}-to-{f}" for k, f in OUTPUTS])
def test_output_file_valid_and_indexed(view, demo_files, tmp_path, kind, fmt):
    regions = ["chr1:20000-30000", "chr3:1000-4000"]
    ref = demo_files / "reference.fa"
    result = ok(
        view(
            kind,
            "--query",
            *regions,
            "--output-format",
            fmt,
            "--output-dir",
            str(tmp_path),
            "--output-index",
            "--reference-file",
            str(ref),
        )
    )
    assert result.stdout == ""
    written = list(tmp_path.glob(f"*.{fmt.lower()}"))
    assert len(written) == 1, list(tmp_path.iterdir())
    out = written[0]
    assert str(out) in result.stderr  # "Wrote <path>"
    # CRAM decoding writes NM/MD/RG in its own tag order: a CRAM on either side means the
    # expected records are those of the same donor's demo CRAM (made from the same BAM)
    source = demo_files / FILES[kind]
    if "CRAM" in (fmt, kind.upper()):
        source = source.with_suffix(".cram")
    want = samtools_records(source, regions, ref)
    assert want
    if fmt == "SAM":
        assert body(out.read_text(), "@") == want
        return
    peer("samtools", "quickcheck", "-v", out)
    assert samtools_records(out, [], ref) == want
    index = Path(f"{out}.{'bai' if fmt == 'BAM' else 'crai'}")
    assert index.is_file(), list(tmp_path.iterdir())
    # a region query needs the index; inside the sliced region it must see the same reads
    sub = "chr1:22000-23500"
    assert samtools_records(out, [sub], ref) == samtools_records(source, [sub], ref)
    stats = peer("samtools", "idxstats", out).splitlines()
    mapped = {cells[0]: int(cells[2]) for cells in (line.split("\t") for line in stats)}
    assert mapped["chr1"] == len(samtools_records(source, regions[:1], ref))
    assert mapped["chr2"] == 0


def test_cram_output_needs_reference(view, demo_files, tmp_path):
    result = view(
        "bam", "--query", "chr1:1-1000", "--output-format", "CRAM", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert "--reference-file" in one_line_error(result)


@pytest.mark.parametrize("fmt", ["BCF", "VCF"])
def test_variant_output_file(view, demo_files, tmp_path, fmt):
    regions = ["chr1:1000-60000", "chr2:5000-40000"]
    ok(
        view(
            "vcf",
            "--query",
            *regions,
            "--output-format",
            fmt,
            "--output-dir",
            str(tmp_path),
            "--output-index",
        )
    )
    written = list(tmp_path.glob(f"*.{fmt.lower()}"))
    assert len(written) == 1, list(tmp_path.iterdir())
    want = expected_records("vcf", demo_files, regions)
    assert want
    assert bcftools_records(written[0], []) == want
    if fmt == "BCF":
        assert Path(f"{written[0]}.csi").is_file()
        sub = "chr1:20000-30000"
        assert bcftools_records(written[0], [sub]) == expected_records("vcf", demo_files, [sub])


def test_variant_file_refuses_alignment_format(view):
    result = view("vcf", "--query", "chr1:1-1000", "--output-format", "BAM")
    assert result.returncode == 2
    assert "VCF or BCF" in one_line_error(result)


# -- --bed-query ----------------------------------------------------------------------------
BED = "track name=demo\nchr1\t999\t3000\nchr2\t50000\t52000\n# a comment\nchr3\t0\t700\n"
BED_REGIONS = ["chr1:1000-3000", "chr2:50001-52000", "chr3:1-700"]


def test_bed_query(view, demo_files, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text(BED)
    result = ok(view("bam", "--bed-query", str(bed)))
    got = body(result.stdout, "@")
    assert got == expected_records("bam", demo_files, BED_REGIONS)
    # the regions are sorted and far apart, so samtools -L (which dedups) agrees
    assert got == peer("samtools", "view", "-L", bed, demo_files / FILES["bam"]).splitlines()
    out = tmp_path / "o"
    written_run = ok(view("bam", "--bed-query", str(bed), "--output-dir", str(out)))
    assert written_run.stdout == ""
    written = list(out.glob("*.sam"))
    assert len(written) == 1 and "regions.bed" in written[0].name
    assert body(written[0].read_text(), "@") == got


def test_bed_is_zero_based_half_open(view, demo_files, tmp_path):
    """BED start S means first base S+1: a read whose last base is S is out, at S+1 is in."""
    reads = expected_records("bam", demo_files, ["chr2:40000-42000"])
    cells = next(line.split("\t") for line in reads if line.split("\t")[5] == "100M")
    name, last = cells[0], int(cells[3]) + 99
    bed = tmp_path / "edge.bed"
    bed.write_text(f"chr2\t{last}\t{last + 300}\n")
    after = [
        line.split("\t")[0] for line in body(ok(view("bam", "--bed-query", str(bed))).stdout, "@")
    ]
    assert name not in after
    assert after == [
        line.split("\t")[0]
        for line in expected_records("bam", demo_files, [f"chr2:{last + 1}-{last + 300}"])
    ]
    bed.write_text(f"chr2\t{last - 1}\t{last + 300}\n")
    before = [
        line.split("\t")[0] for line in body(ok(view("bam", "--bed-query", str(bed))).stdout, "@")
    ]
    assert name in before


def test_bed_query_vcf(view, demo_files, tmp_path):
    bed = tmp_path / "regions.bed"
    bed.write_text(BED)
    result = ok(view("vcf", "--bed-query", str(bed)))
    assert body(result.stdout, "#") == expected_records("vcf", demo_files, BED_REGIONS)


def test_bad_bed_line(view, tmp_path):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t500\t100\n")
    result = view("bam", "--bed-query", str(bed))
    assert result.returncode == 2
    assert "bad.bed" in one_line_error(result)
    assert result.stdout == ""


# -- local files ----------------------------------------------------------------------------
def local(*args: str, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run(
        [CLIENT, "view", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={
            **os.environ,
            "SCORE_CLIENT_CONF_DIR": "/nonexistent",
            "ACCESSTOKEN": "",
            **(env or {}),
        },
    )


@pytest.mark.parametrize("kind", ["bam", "cram", "vcf"])
def test_input_file_local(demo_files, tools, kind):
    regions = ["chr2:30000-34000", "chr1:100000", "chr3:1-200"]
    extra = ["--reference-file", str(demo_files / "reference.fa")] if kind == "cram" else []
    result = local("--input-file", str(demo_files / FILES[kind]), "--query", *regions, *extra)
    ok(result)
    comment = "#" if kind == "vcf" else "@"
    assert body(result.stdout, comment) == expected_records(kind, demo_files, regions)


def test_input_file_with_explicit_index(demo_files, tools, tmp_path):
    data = tmp_path / "reads.bam"
    shutil.copy(demo_files / FILES["bam"], data)
    shutil.copy(demo_files / f"{FILES['bam']}.bai", tmp_path / "elsewhere.bai")
    result = ok(
        local(
            "--input-file",
            str(data),
            "--input-file-index",
            str(tmp_path / "elsewhere.bai"),
            "--query",
            "chr2:10000-12000",
            "--stdout",
        )
    )
    assert body(result.stdout, "@") == expected_records("bam", demo_files, ["chr2:10000-12000"])


def test_input_file_without_index_whole_file(demo_files, tools, tmp_path):
    shutil.copy(demo_files / FILES["bam"], tmp_path)
    result = ok(local("--input-file", str(tmp_path / FILES["bam"])))
    assert body(result.stdout, "@") == expected_records("bam", demo_files, [])


def test_input_file_relative_path(demo_files, tools, tmp_path):
    shutil.copy(demo_files / FILES["bam"], tmp_path)
    shutil.copy(demo_files / f"{FILES['bam']}.bai", tmp_path)
    result = ok(local("--input-file", FILES["bam"], "--query", "chr1:5000-6000", cwd=tmp_path))
    assert body(result.stdout, "@") == expected_records("bam", demo_files, ["chr1:5000-6000"])


# -- pipes, connection, stray files -----------------------------------------------------------
def test_pipe_to_head_exits_quietly(demo_server, ids, reader, tmp_path, tools):
    rc_file = tmp_path / "rc"
    script = (
        f'"{CLIENT}" view --object-id {ids[FILES["bam"]]} | head -n 1; '
        f'echo "${{PIPESTATUS[0]}}" > "{rc_file}"'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **demo_server.client_env(reader)},
    )
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["@HD\tVN:1.6\tSO:coordinate"]
    assert result.stderr == "", result.stderr
    assert int(rc_file.read_text()) in (0, 141)  # 141: SIGPIPE, as samtools


def test_no_connection_check_and_no_stray_files(view, demo_files, tmp_path):
    """htslib caches remote indexes in the cwd; score-client must not leave them there."""
    result = ok(
        view("cram", "--query", "chr2:1000-3000", "--verify-connection", "false", cwd=tmp_path)
    )
    assert body(result.stdout, "@") == expected_records("cram", demo_files, ["chr2:1000-3000"])
    ok(view("vcf", "--query", "chr2:1000-30000", cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_names_the_setting(demo_server, ids, reader):
    result = demo_server.client(
        "view",
        "--object-id",
        ids[FILES["bam"]],
        "--query",
        "chr1",
        token=reader,
        env={
            "METADATA_URL": "http://127.0.0.1:9",
            "STORAGE_URL": "http://127.0.0.1:9",
            "STORAGE_RETRYNUMBER": "0",
        },
    )
    assert result.returncode == 2  # a service never reached: its URL setting is wrong
    assert one_line_error(result) == (
        "score-client: error: STORAGE_URL=http://127.0.0.1:9 refused the connection (set in "
        "the environment)"
    )


# -- manifest -------------------------------------------------------------------------------
def test_manifest_slices_alignment_and_variant_rows(
    demo_server, demo_files, reader, tmp_path, tools
):
    """BAM and VCF rows are sliced, TSV and FASTA rows skipped. The CRAM rows are left out
    here; the test below covers names that would collide."""
    lines = demo_server.manifest.read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if "\tCRAM\t" not in line]
    assert any("\tTSV\t" in line for line in kept) and any("\tFASTA\t" in line for line in kept)
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(kept) + "\n")
    out = tmp_path / "out"
    ok(
        demo_server.client(
            "view",
            "--manifest",
            str(manifest),
            "--query",
            "chr1:1000-4000",
            "chr3:30000-31000",
            "--output-dir",
            str(out),
            token=reader,
        )
    )
    regions = ["chr1:1000-4000", "chr3:30000-31000"]
    want = {
        f"{donor}.chr1_1000-4000__chr3_30000-31000.{ext}"
        for donor in ("DONOR-1-N", "DONOR-2-N")
        for ext in ("sam", "vcf")
    }
    assert {p.name for p in out.iterdir()} == want
    for donor in ("DONOR-1-N", "DONOR-2-N"):
        stem = f"{donor}.chr1_1000-4000__chr3_30000-31000"
        assert body((out / f"{stem}.sam").read_text(), "@") == samtools_records(
            demo_files / f"{donor}.bam", regions
        )
        assert body((out / f"{stem}.vcf").read_text(), "#") == bcftools_records(
            demo_files / f"{donor}.vcf.gz", regions
        )


def view_manifest(server, out: Path, token: str, *extra: str):
    """The demo manifest's files sliced to chr1:1000-4000 into `out`."""
    return server.client(
        "view",
        "--manifest",
        str(server.manifest),
        "--query",
        "chr1:1000-4000",
        "--output-dir",
        str(out),
        *extra,
        token=token,
    )


def test_manifest_one_output_per_row(demo_server, demo_files, reader, tmp_path, ids):
    out = tmp_path / "out"
    ok(
        view_manifest(
            demo_server, out, reader, "--reference-file", str(demo_files / "reference.fa")
        )
    )
    sliceable = [n for n in ids if n.endswith((".bam", ".cram", ".vcf.gz"))]
    assert len(sliceable) == 6
    # each donor's BAM and CRAM both slice to SAM: the CRAM's keeps its own extension in
    # its name (the BAM, first in the manifest, has the original's plain name)
    assert {p.name for p in out.iterdir()} == {
        f"{donor}.{middle}chr1_1000-4000.{ext}"
        for donor in ("DONOR-1-N", "DONOR-2-N")
        for middle, ext in (("cram.", "sam"), ("", "sam"), ("", "vcf"))
    }


def test_manifest_of_a_study_the_token_cannot_read_is_one_summary(demo_server, tmp_path):
    result = view_manifest(demo_server, tmp_path, demo_server.token("PROGRAMDATA-OTHER.READ"))
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines() == [demo_refused(6)]
    assert list(tmp_path.iterdir()) == []


def test_manifest_needs_output_dir(demo_server, reader):
    result = demo_server.client(
        "view", "--manifest", str(demo_server.manifest), "--query", "chr1", token=reader
    )
    assert result.returncode == 2
    one_line_error(result)


# -- access ---------------------------------------------------------------------------------
def test_controlled_file_refused_without_token(view):
    result = view("bam", "--query", "chr1:1-1000", token=None)
    assert result.returncode == 3
    assert "access token" in one_line_error(result).lower()
    assert result.stdout == ""


def test_controlled_file_refused_with_other_study_scope(demo_server, view):
    other = demo_server.token("PROGRAMDATA-OTHER.READ")
    result = view("bam", "--query", "chr1:1-1000", token=other)
    assert result.returncode == 3
    assert "PROGRAMDATA-DEMO.READ" in one_line_error(result)
    assert result.stdout == ""


# -- bad input: one line, non-zero exit -------------------------------------------------------
BAD_REGIONS = [
    ("unknown-contig", "bam", ["chr9:1-100"], "chr9"),
    ("inverted", "bam", ["chr1:500-100"], "chr1:500-100"),
    ("start-beyond-length", "bam", ["chr3:40001-40100"], "chr3"),
    ("start-zero", "bam", ["chr1:0-100"], "chr1:0-100"),
    ("not-a-region", "bam", ["chr1:abc"], "chr1:abc"),
    ("unknown-in-batch", "bam", ["chr1:100-200", "chrZ"], "chrZ"),
    ("inverted-in-batch", "bam", ["chr1:100-200", "chr2:900-100"], "chr2:900-100"),
    ("unknown-contig", "cram", ["chrM"], "chrM"),
    ("start-beyond-length", "cram", ["chr2:80001"], "chr2"),
    ("unknown-contig", "vcf", ["chrX:1-100"], "chrX"),
    ("inverted", "vcf", ["chr1:500-100"], "chr1:500-100"),
    ("start-beyond-length", "vcf", ["chr1:120001-120002"], "chr1"),
]


@pytest.mark.parametrize(
    ("kind", "regions", "mention"),
    [pytest.param(k, r, m, id=f"{k}-{label}") for label, k, r, m in BAD_REGIONS],
)
def test_bad_region(view, kind, regions, mention):
    result = view(kind, "--query", *regions)
    assert result.returncode == 2
    assert mention in one_line_error(result)
    assert result.stdout == ""


def test_non_alignment_object(view):
    result = view("clinical.tsv", "--query", "chr1:1-100")
    assert result.returncode == 2
    assert "clinical.tsv" in one_line_error(result)
    result = view("reference.fa", "--query", "chr1:1-100")
    assert result.returncode == 2
    one_line_error(result)


def test_non_alignment_content_named_bam(demo_files, tools, tmp_path):
    fake = tmp_path / "fake.bam"
    shutil.copy(demo_files / "clinical.tsv", fake)
    result = local("--input-file", str(fake), "--query", "chr1:1-100")
    assert "fake.bam" in one_line_error(result)
    assert result.stdout == ""


def test_unknown_object_id(demo_server, reader):
    result = demo_server.client(
        "view", "--object-id", str(uuid.uuid4()), "--query", "chr1", token=reader
    )
    one_line_error(result)


def test_missing_local_file(tmp_path, tools):
    result = local("--input-file", str(tmp_path / "nope.bam"), "--query", "chr1")
    assert result.returncode == 2
    assert "nope.bam" in one_line_error(result)


def missing_index(kind: str, demo_files: Path, tmp_path: Path):
    shutil.copy(demo_files / FILES[kind], tmp_path)
    extra = ["--reference-file", str(demo_files / "reference.fa")] if kind == "cram" else []
    return local("--input-file", str(tmp_path / FILES[kind]), "--query", "chr1:1000-2000", *extra)


def test_missing_index_bam(demo_files, tools, tmp_path):
    result = missing_index("bam", demo_files, tmp_path)
    assert "index" in one_line_error(result)
    assert result.stdout == ""


def test_missing_index_cram(demo_files, tools, tmp_path):
    result = missing_index("cram", demo_files, tmp_path)
    assert "index" in one_line_error(result)
    assert result.stdout == ""


def test_missing_index_vcf(demo_files, tools, tmp_path):
    result = missing_index("vcf", demo_files, tmp_path)
    assert "index" in one_line_error(result)
    assert result.stdout == ""


def test_wrong_index(demo_files, tools, tmp_path):
    shutil.copy(demo_files / FILES["bam"], tmp_path)
    result = local(
        "--input-file",
        str(tmp_path / FILES["bam"]),
        "--input-file-index",
        str(demo_files / f"{FILES['vcf']}.tbi"),
        "--query",
        "chr1:1-10000",
    )
    one_line_error(result)


@pytest.fixture
def cram_without_reference(demo_files, tools, tmp_path) -> tuple[Path, dict[str, str]]:
    """A CRAM whose reference (UR: and M5) cannot be found anywhere htslib looks."""
    ref = tmp_path / "ref.fa"
    shutil.copy(demo_files / "reference.fa", ref)
    cram = tmp_path / "orphan.cram"
    peer("samtools", "view", "-C", "-T", ref, "--no-PG", "-o", cram, demo_files / FILES["bam"])
    peer("samtools", "index", cram)
    ref.unlink()
    Path(f"{ref}.fai").unlink(missing_ok=True)
    cache = tmp_path / "ref-cache"
    cache.mkdir()
    return cram, {"REF_PATH": "/nonexistent", "REF_CACHE": str(cache)}


def test_cram_without_usable_reference_region(cram_without_reference):
    cram, env = cram_without_reference
    result = local("--input-file", str(cram), "--query", "chr1:1000-2000", env=env)
    assert "reference" in one_line_error(result).lower()


def test_cram_without_usable_reference_whole_file(cram_without_reference):
    cram, env = cram_without_reference
    result = local("--input-file", str(cram), env=env)
    assert "reference" in one_line_error(result).lower()


def test_cram_without_reference_header_only_still_works(cram_without_reference):
    cram, env = cram_without_reference
    result = ok(local("--input-file", str(cram), "--header-only", env=env))
    assert result.stdout.startswith("@HD")


def test_usage_errors(demo_server, reader, tools):
    for args in (
        ["--query", "chr1"],
        ["--object-id", "not-a-uuid"],
        ["--input-file-index", "/tmp/x.bai", "--object-id", str(uuid.uuid4())],
    ):
        result = demo_server.client("view", *args, token=reader)
        assert result.returncode == 2, args
        one_line_error(result)
