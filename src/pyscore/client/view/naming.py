"""What a file is (alignments or variants) and what a slice of it is called: the original's
`<base>.<q1>__<q2>.<ext>`, `.header.`, `.<bed name>.`, at most 128 characters."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pyscore.client.errors import UsageError
from pyscore.client.view.regions import Region

ALIGNMENT_SUFFIXES = (".bam", ".sam", ".cram")
VARIANT_SUFFIXES = (".vcf.gz", ".vcf.bgz", ".bcf", ".vcf")


def kind_of(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(VARIANT_SUFFIXES):
        return "variants"
    if lowered.endswith(ALIGNMENT_SUFFIXES):
        return "reads"
    raise UsageError(f"{name} is not an alignment (BAM/SAM/CRAM) or variant (VCF/BCF) file")


def output_name(
    file_name: str,
    regions: list[Region],
    header_only: bool,
    bed: Optional[Path],
    ext: str,
    own_suffix: bool = False,
) -> str:
    """The original's naming: <base>.<q1>__<q2>.<ext>, .header., or .<bed name>., ≤128 chars.
    `own_suffix`: the base keeps the file's own extension (a.cram → a.cram.<q1>.sam), which
    tells apart the slices of a.bam and a.cram."""
    base = file_name
    for suffix in (*VARIANT_SUFFIXES, *ALIGNMENT_SUFFIXES):
        if base.lower().endswith(suffix) and not own_suffix:
            base = base[: -len(suffix)]
            break
    if header_only:
        middle = "header"
    elif bed is not None:
        middle = bed.name
    else:
        middle = "__".join(r.label().replace(":", "_") for r in regions) or "all"
    name = f"{base}.{middle}.{ext}"
    if len(name) > 128:
        name = name[: 127 - len(ext) - 1] + "~." + ext
    return name


def extension(kind: str, fmt: str) -> str:
    if kind == "variants":
        return "bcf" if fmt == "BCF" else "vcf"
    return fmt.lower()
