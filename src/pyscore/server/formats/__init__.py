"""Binary genomic formats, read just enough to answer htsget: BGZF, indexes, headers."""
