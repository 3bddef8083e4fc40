"""GA4GH htsget 1.3: tickets naming the exact byte ranges of a region, from the index."""
