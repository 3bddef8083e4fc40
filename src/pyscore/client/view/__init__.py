"""`view`: slices of remote (or local) BAM, CRAM and VCF files through htslib, fetching only
the blocks that hold the regions.

One module per idea: `regions` (what --query and --bed-query mean), `naming` (what a file is
and what its slice is called), `htsget` (the server's htsget tickets and signed-URL fetches),
`slicing` (htslib over a file, a URL or ticket blocks), `run` (the command: sources, names,
many objects side by side).
"""

from __future__ import annotations

from pyscore.client.view.naming import kind_of, output_name
from pyscore.client.view.regions import UNMAPPED, Region, check_region, parse_bed, parse_region
from pyscore.client.view.run import Job, run_local, run_remote, slice_one
from pyscore.client.view.slicing import Source, slice_reads, slice_variants

__all__ = [
    "UNMAPPED",
    "Job",
    "Region",
    "Source",
    "check_region",
    "kind_of",
    "output_name",
    "parse_bed",
    "parse_region",
    "run_local",
    "run_remote",
    "slice_one",
    "slice_reads",
    "slice_variants",
]
