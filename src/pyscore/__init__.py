"""pyscore: a Java-free Overture Score/Song for controlled-access genomics data."""

__version__ = "0.1.0"  # the one place the version lives (pyproject reads it from here)
