"""Benchmarks: pyscore side by side with peer tools, results in bench/RESULTS.md."""
