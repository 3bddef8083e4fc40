"""Synthetic, deterministic genomics data for demos and tests, generated with pysam.

One study, two donors. Per donor: a coordinate-sorted BAM + BAI and a CRAM + CRAI on a small
random reference (FASTA + FAI, open), and a bgzipped VCF + TBI; plus one open clinical TSV.
The same seed gives the same bytes with the same htslib.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pysam

CONTIGS = (("chr1", 120_000), ("chr2", 80_000), ("chr3", 40_000))
READ_LEN = 100
BASES = "ACGT"


@dataclass
class DemoFile:
    path: Path
    file_type: str
    access: str
    data_type: str


@dataclass
class DemoAnalysis:
    donor: str  # submitter donor id, or "" for study-level files
    analysis_type: str
    files: list[DemoFile] = field(default_factory=list)


def reference(out: Path, rng: random.Random) -> Path:
    fasta = out / "reference.fa"
    with open(fasta, "w") as f:
        for name, length in CONTIGS:
            seq = "".join(rng.choice(BASES) for _ in range(length))
            f.write(f">{name}\n")
            for i in range(0, length, 60):
                f.write(seq[i : i + 60] + "\n")
    pysam.faidx(str(fasta))
    return fasta


def _mutate(seq: str, rng: random.Random) -> str:
    chars = list(seq)
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(chars))
        chars[i] = rng.choice(BASES)
    return "".join(chars)


def alignments(
    out: Path, name: str, fasta: Path, rng: random.Random, reads_per_contig: int
) -> Path:
    """A coordinate-sorted, indexed BAM with varied CIGARs, pairs and unmapped reads."""
    ref = pysam.FastaFile(str(fasta))
    header = {
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": n, "LN": ln} for n, ln in CONTIGS],
        "RG": [{"ID": f"{name}.rg1", "SM": name, "PL": "ILLUMINA", "LB": f"{name}.lib"}],
        "PG": [{"ID": "pyscore-demo", "PN": "pyscore-demo", "VN": "1"}],
    }
    unsorted = out / f"{name}.unsorted.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as bam:
        serial = 0
        for tid, (contig, length) in enumerate(CONTIGS):
            for _ in range(reads_per_contig):
                serial += 1
                pos = rng.randrange(0, length - READ_LEN - 10)
                kind = rng.random()
                seg = pysam.AlignedSegment(bam.header)
                seg.query_name = f"{name}:read{serial:07d}"
                if kind < 0.8:
                    seq, cigar = ref.fetch(contig, pos, pos + READ_LEN), [(0, READ_LEN)]
                elif kind < 0.9:  # soft clip
                    seq = ref.fetch(contig, pos, pos + READ_LEN - 10) + "".join(
                        rng.choice(BASES) for _ in range(10)
                    )
                    cigar = [(0, READ_LEN - 10), (4, 10)]
                elif kind < 0.95:  # deletion
                    seq = ref.fetch(contig, pos, pos + 50) + ref.fetch(contig, pos + 53, pos + 103)
                    cigar = [(0, 50), (2, 3), (0, 50)]
                else:  # insertion
                    seq = (
                        ref.fetch(contig, pos, pos + 48)
                        + "TTTT"
                        + ref.fetch(contig, pos + 48, pos + 96)
                    )
                    cigar = [(0, 48), (1, 4), (0, 48)]
                seg.query_sequence = _mutate(seq, rng)
                seg.flag = rng.choice((0, 16, 99, 147, 83, 163))
                seg.reference_id = tid
                seg.reference_start = pos
                seg.mapping_quality = rng.choice((0, 20, 37, 60, 60, 60))
                seg.cigartuples = cigar
                seg.query_qualities = pysam.qualitystring_to_array(
                    "".join(chr(33 + rng.randint(20, 40)) for _ in range(len(seq)))
                )
                if seg.flag & 1:
                    seg.next_reference_id = tid
                    seg.next_reference_start = min(length - READ_LEN, pos + rng.randint(100, 400))
                    seg.template_length = rng.choice((1, -1)) * rng.randint(200, 500)
                seg.set_tag("RG", f"{name}.rg1")
                seg.set_tag("NM", rng.randint(0, 3))
                bam.write(seg)
        for i in range(reads_per_contig // 20):  # unplaced, unmapped reads sort last
            seg = pysam.AlignedSegment(bam.header)
            seg.query_name = f"{name}:unmapped{i:05d}"
            seg.flag = 4
            seg.reference_id = -1
            seg.reference_start = -1
            seg.query_sequence = "".join(rng.choice(BASES) for _ in range(READ_LEN))
            seg.query_qualities = pysam.qualitystring_to_array("I" * READ_LEN)
            seg.set_tag("RG", f"{name}.rg1")
            bam.write(seg)
    bam_path = out / f"{name}.bam"
    pysam.sort("-o", str(bam_path), "--no-PG", str(unsorted))
    unsorted.unlink()
    pysam.index(str(bam_path))
    return bam_path


def to_cram(bam: Path, fasta: Path) -> Path:
    cram = bam.with_suffix(".cram")
    pysam.view("-C", "-T", str(fasta), "--no-PG", "-o", str(cram), str(bam), catch_stdout=False)
    pysam.index(str(cram))
    return cram


def variants(out: Path, name: str, fasta: Path, rng: random.Random, per_contig: int) -> Path:
    ref = pysam.FastaFile(str(fasta))
    header = pysam.VariantHeader()
    for contig, length in CONTIGS:
        header.contigs.add(contig, length=length)
    header.add_meta("source", "pyscore-demo")
    header.formats.add("GT", 1, "String", "Genotype")
    header.formats.add("DP", 1, "Integer", "Read depth")
    header.info.add("DP", 1, "Integer", "Total depth")
    header.add_sample(name)
    plain = out / f"{name}.vcf"
    with pysam.VariantFile(str(plain), "w", header=header) as vcf:
        for contig, length in CONTIGS:
            for pos in sorted(rng.sample(range(1, length - 1), per_contig)):
                ref_base = ref.fetch(contig, pos - 1, pos).upper()
                alt = rng.choice([b for b in BASES if b != ref_base])
                rec = vcf.new_record(
                    contig=contig,
                    start=pos - 1,
                    alleles=(ref_base, alt),
                    qual=rng.randint(10, 99),
                    filter="PASS",
                )
                rec.info["DP"] = rng.randint(5, 80)
                rec.samples[name]["GT"] = rng.choice(((0, 1), (1, 1)))
                rec.samples[name]["DP"] = rec.info["DP"]
                vcf.write(rec)
    gz = Path(pysam.tabix_index(str(plain), preset="vcf", force=True))
    return gz


def clinical(out: Path, donors: list[str], rng: random.Random) -> Path:
    path = out / "clinical.tsv"
    rows = ["submitter_donor_id\tsex\tage_at_diagnosis\tprimary_site\tvital_status"]
    for d in donors:
        rows.append(
            f"{d}\t{rng.choice(('Male', 'Female'))}\t{rng.randint(30, 80)}\t"
            f"{rng.choice(('Pancreas', 'Breast', 'Lung'))}\t"
            f"{rng.choice(('Alive', 'Deceased'))}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def generate(
    out: Path, seed: int = 42, reads_per_contig: int = 3000, variants_per_contig: int = 200
) -> list[DemoAnalysis]:
    """Write the demo files under `out` and describe how they group into analyses."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fasta = reference(out, rng)
    donors = ["DONOR-1", "DONOR-2"]
    plan: list[DemoAnalysis] = []
    for donor in donors:
        sample = f"{donor}-N"
        bam = alignments(out, sample, fasta, rng, reads_per_contig)
        cram = to_cram(bam, fasta)
        vcf = variants(out, sample, fasta, rng, variants_per_contig)
        plan.append(
            DemoAnalysis(
                donor,
                "sequencingRead",
                [
                    DemoFile(bam, "BAM", "controlled", "Aligned Reads"),
                    DemoFile(Path(f"{bam}.bai"), "BAI", "controlled", "Aligned Reads Index"),
                ],
            )
        )
        cram_files = [
            DemoFile(cram, "CRAM", "controlled", "Aligned Reads"),
            DemoFile(Path(f"{cram}.crai"), "CRAI", "controlled", "Aligned Reads Index"),
        ]
        if donor == donors[0]:  # the reference once, open, beside the first CRAM
            cram_files += [
                DemoFile(fasta, "FASTA", "open", "Reference Genome"),
                DemoFile(Path(f"{fasta}.fai"), "FAI", "open", "Reference Genome"),
            ]
        plan.append(DemoAnalysis(donor, "sequencingRead", cram_files))
        plan.append(
            DemoAnalysis(
                donor,
                "variantCall",
                [
                    DemoFile(vcf, "VCF", "controlled", "Simple Nucleotide Variation"),
                    DemoFile(
                        Path(f"{vcf}.tbi"), "TBI", "controlled", "Simple Nucleotide Variation"
                    ),
                ],
            )
        )
    plan.append(
        DemoAnalysis(
            "",
            "clinicalData",
            [DemoFile(clinical(out, donors, rng), "TSV", "open", "Clinical Data")],
        )
    )
    return plan
