"""What a file is, by its name: an index of which data file, and which htsget format.

One rule for client and server: the server links an index to its data file at submission, the
client finds the index beside a data file in Song's entity listing, both with `index_names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, TypeVar

T = TypeVar("T")

# .idx is the original client's (Tribble); .fai indexes a FASTA reference.
INDEX_SUFFIXES = (".bai", ".crai", ".tbi", ".csi", ".idx", ".fai")

# The index kinds that fit a data file, by its name; a name not listed may take any.
INDEXES_OF = (
    (".bam", (".bai", ".csi")),
    (".cram", (".crai",)),
    (".vcf.gz", (".tbi", ".csi")),
    (".vcf.bgz", (".tbi", ".csi")),
    (".bcf", (".csi",)),
    (".vcf", (".idx",)),
    (".fa", (".fai",)),
    (".fasta", (".fai",)),
)

HTSGET_FORMATS = (
    (".bam", "BAM"),
    (".cram", "CRAM"),
    (".vcf.gz", "VCF"),
    (".vcf.bgz", "VCF"),
    (".bcf", "BCF"),
)


def is_index(file_name: str) -> bool:
    return file_name.lower().endswith(INDEX_SUFFIXES)


def index_names(data_name: str) -> list[str]:
    """The lower-cased names an index of `data_name` may have, best first: `a.bam.bai`, then
    `a.bai` (samtools writes both); only kinds that fit the data (a CRAM's is a .crai, never
    a .bai, even beside a BAM of the same stem)."""
    name = data_name.lower()
    suffixes = next((fit for ext, fit in INDEXES_OF if name.endswith(ext)), INDEX_SUFFIXES)
    stem = name.rsplit(".", 1)[0]
    names = [name + suffix for suffix in suffixes]
    return names + ([stem + suffix for suffix in suffixes] if stem != name else [])


def find_index(data_name: str, by_name: Mapping[str, T]) -> Optional[T]:
    """The index of `data_name` among files keyed by lower-cased name, if there is one."""
    return next((by_name[n] for n in index_names(data_name) if n in by_name), None)


def htsget_format(file_name: str) -> Optional[str]:
    """The GA4GH htsget format a file is served as, by its name (None: not sliceable)."""
    name = file_name.lower()
    return next((fmt for suffix, fmt in HTSGET_FORMATS if name.endswith(suffix)), None)


def human_size(n: float) -> str:
    """A size as people read it (decimal units), the same on the File Repository page and in
    the client's progress and messages."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
