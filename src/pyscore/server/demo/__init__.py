"""A generated, published demo study: BAM/CRAM/VCF files with their indexes."""
